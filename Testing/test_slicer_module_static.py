"""Static checks of the Slicer module files (no Slicer needed).

* the panel's ``.ui`` parses, and every ``self.ui.<name>`` the module uses exists in it;
* every ``SlicerParameterName`` in the ``.ui`` is a field of the parameter node, bound to a widget type
  that Slicer's parameterNodeWrapper can connect to that field's type;
* the files Slicer imports at start-up stay importable by Slicer 5.8's Python 3.9 (no ``X | Y``
  annotations or ``match`` statements evaluated at import, no top-level import of KnowledgeSAMLib);
* the CMake lists name every Python file of the module folders, so an installed extension is complete.
"""

from __future__ import annotations

import ast
import re
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
MODULE = ROOT / "KnowledgeSAM" / "KnowledgeSAM.py"
UI = ROOT / "KnowledgeSAM" / "Resources" / "UI" / "KnowledgeSAM.ui"
EFFECT_MODULE = ROOT / "SegmentEditorKnowledgeSAM" / "SegmentEditorKnowledgeSAM.py"
EFFECT = ROOT / "SegmentEditorKnowledgeSAM" / "SegmentEditorKnowledgeSAMLib" / "SegmentEditorEffect.py"
SLICER_SIDE = [MODULE, EFFECT_MODULE, EFFECT, *sorted((ROOT / "KnowledgeSAM" / "KnowledgeSAMSlicer").glob("*.py")),
               ROOT / "KnowledgeSAM" / "Scripts" / "KnowledgeSAMBatch.py"]

# parameterNodeWrapper connectors (Base/Python/slicer/parameterNodeWrapper/guiConnectors.py, Slicer 5.8-5.13)
CONNECTABLE = {
    "qMRMLNodeComboBox": {"node"},
    "QComboBox": {"str", "int", "float", "bool"},  # requires a Choice annotation
    "ctkComboBox": {"str", "int", "float", "bool"},
    "QSpinBox": {"int"},
    "QSlider": {"int"},
    "QCheckBox": {"bool"},
    "ctkCheckBox": {"bool"},
    "QLineEdit": {"str"},
    "QDoubleSpinBox": {"float", "int"},
}


def ui_widgets() -> dict[str, ElementTree.Element]:
    tree = ElementTree.parse(UI)
    return {w.get("name"): w for w in tree.iter("widget")}


def parameter_fields() -> dict[str, str]:
    """Field name -> "node" / builtin type name, from the @parameterNodeWrapper class."""
    tree = ast.parse(MODULE.read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "KnowledgeSAMParameterNode")
    fields = {}
    for statement in cls.body:
        if isinstance(statement, ast.AnnAssign):
            annotation = ast.unparse(statement.annotation)
            base = re.sub(r"^Annotated\[(\w+),.*\]$", r"\1", annotation)
            fields[statement.target.id] = "node" if base.startswith("vtkMRML") else base
    return fields


def test_ui_parses_and_is_a_qmrmlwidget():
    root = ElementTree.parse(UI).getroot()
    assert root.tag == "ui"
    top = root.find("widget")
    assert top.get("class") == "qMRMLWidget" and top.get("name") == "KnowledgeSAM"


def test_every_ui_name_used_by_the_module_exists():
    names = set(ui_widgets())
    source = MODULE.read_text(encoding="utf-8")
    used = set(re.findall(r"\bui\.(\w+)", source))
    assert used, "the module does not use self.ui at all?"
    missing = sorted(used - names)
    assert not missing, f"KnowledgeSAM.py uses widgets missing from KnowledgeSAM.ui: {missing}"


def test_every_node_selector_gets_the_scene():
    root = ElementTree.parse(UI).getroot()
    selectors = {w.get("name") for w in root.iter("widget") if w.get("class") == "qMRMLNodeComboBox"}
    receivers = {c.findtext("receiver") for c in root.iter("connection")
                 if c.findtext("signal") == "mrmlSceneChanged(vtkMRMLScene*)"}
    assert selectors and selectors <= receivers


def test_parameter_names_match_fields_and_widget_types():
    fields = parameter_fields()
    bound = {}
    for name, widget in ui_widgets().items():
        for prop in widget.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                bound[prop.findtext("string")] = (name, widget.get("class"))
    unknown = sorted(set(bound) - set(fields))
    assert not unknown, f"SlicerParameterName without a parameter node field: {unknown}"
    for parameter, (widget_name, widget_class) in bound.items():
        assert fields[parameter] in CONNECTABLE.get(widget_class, set()), (
            f"{widget_name} ({widget_class}) cannot be connected to {parameter}: {fields[parameter]}")
    source = MODULE.read_text(encoding="utf-8")
    for parameter, (widget_name, widget_class) in bound.items():
        if widget_class in ("QComboBox", "ctkComboBox"):
            assert re.search(rf"{parameter}: Annotated\[\w+, Choice\(", source), f"{parameter} needs Choice(...)"


def _pep604_annotations(tree: ast.AST) -> list[str]:
    """``X | Y`` used in annotations (evaluated at import/def time on Python 3.9 without __future__)."""
    found = []
    for node in ast.walk(tree):
        annotations = []
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            annotations = [a.annotation for a in node.args.args + node.args.kwonlyargs if a.annotation]
            annotations += [node.returns] if node.returns else []
        elif isinstance(node, ast.AnnAssign):
            annotations = [node.annotation]
        for annotation in annotations:
            if any(isinstance(n, ast.BinOp) and isinstance(n.op, ast.BitOr) for n in ast.walk(annotation)):
                found.append(f"line {annotation.lineno}: {ast.unparse(annotation)}")
    return found


@pytest.mark.parametrize("path", SLICER_SIDE, ids=lambda p: p.name)
def test_slicer_side_files_parse_as_python39(path):
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
    has_future = any(isinstance(n, ast.ImportFrom) and n.module == "__future__" for n in tree.body)
    if not has_future:
        assert not _pep604_annotations(tree), f"{path.name} uses X | Y annotations: {_pep604_annotations(tree)}"
    assert not any(isinstance(n, getattr(ast, "Match", ())) for n in ast.walk(tree))
    top_level_imports = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    for node in top_level_imports:
        modules = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
        assert not any(m.startswith("KnowledgeSAMLib") for m in modules), (
            f"{path.name} imports KnowledgeSAMLib at top level (breaks the module on Slicer 5.8)")


@pytest.mark.parametrize("folder", ["KnowledgeSAM", "SegmentEditorKnowledgeSAM"])
def test_cmake_lists_every_python_file(folder):
    directory = ROOT / folder
    cmake = (directory / "CMakeLists.txt").read_text(encoding="utf-8").replace("${MODULE_NAME}", folder)
    python_files = [p.relative_to(directory).as_posix() for p in directory.rglob("*.py")
                    if "Testing" not in p.parts and "Scripts" not in p.parts and "__pycache__" not in p.parts]
    missing = [f for f in python_files if f not in cmake]
    assert not missing, f"{folder}/CMakeLists.txt does not install {missing}"
    for resource in re.findall(r"(Resources/[\w./*-]+|\w+Lib/[\w.]+\.png)", cmake):
        if "*" not in resource:
            assert (directory / resource).exists(), f"{folder}/CMakeLists.txt names a missing file {resource}"


def test_root_cmake_declares_the_extension():
    cmake = (ROOT / "CMakeLists.txt").read_text(encoding="utf-8")
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION", "EXTENSION_ICONURL"):
        assert re.search(rf'set\({key} "[^"]+"\)', cmake), key
    assert 'set(EXTENSION_DEPENDS "PyTorch")' in cmake
    assert re.search(r"licen[cs]e", cmake, re.IGNORECASE), "the description must name the weights' licence"
    assert "add_subdirectory(KnowledgeSAM)" in cmake and "add_subdirectory(SegmentEditorKnowledgeSAM)" in cmake
    assert "KnowledgeSAMLib/*.py" in cmake and "Resources/Models/default" in cmake
    # both scripted modules are built and self-tested by one macro, defined before the modules are added
    macro = cmake[cmake.index("macro(knowledgesam_add_scripted_module)"):cmake.index("endmacro()")]
    assert "WITH_GENERIC_TESTS" in macro and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in macro
    assert cmake.index("endmacro()") < cmake.index("add_subdirectory(KnowledgeSAM)")
    for folder in ("KnowledgeSAM", "SegmentEditorKnowledgeSAM"):
        assert "knowledgesam_add_scripted_module()" in (ROOT / folder / "CMakeLists.txt").read_text(encoding="utf-8")


def test_icon_is_128_square_png():
    from PIL import Image

    for path in (ROOT / "KnowledgeSAM.png", ROOT / "KnowledgeSAM" / "Resources" / "Icons" / "KnowledgeSAM.png"):
        with Image.open(path) as image:
            assert image.format == "PNG" and image.size == (128, 128)


def test_the_choices_load_where_the_library_cannot():
    """The Slicer module reads KnowledgeSAMLib/choices.py at import (its parameter node's Choice lists), also on
    Slicer 5.8 (Python 3.9): it must parse as Python 3.9 and import nothing."""
    path = ROOT / "KnowledgeSAMLib" / "choices.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), feature_version=(3, 9))
    assert not [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    assert not _pep604_annotations(tree)
