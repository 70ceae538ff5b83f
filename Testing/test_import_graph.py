"""The layers of docs/dev/LAYERS.md, checked on the source (``ast`` only: needs neither Slicer nor torch).

* no import runs upward: a floor imports only its own floor and the ones below it;
* no import cycle inside ``KnowledgeSAMLib`` (function-level imports count: they only hide a cycle);
* Slicer, Qt, VTK and CTK are imported only in the Slicer folders and the MRML bridge
  (``KnowledgeSAMLib/mrml/``), and the bridge itself uses no Qt and no ``slicer.app``;
* the Slicer folders reach the library through the bridge: they import ``KnowledgeSAMLib.mrml``,
  ``.choices``, ``.errors`` and the ``.data`` containers, never the engine, the model or the trainer.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LIBRARY = "KnowledgeSAMLib"
SLICER_FOLDERS = ("KnowledgeSAM", "SegmentEditorKnowledgeSAM")
SLICER_FLOOR = 4

# The floor of every part of the library: the longest matching prefix wins. A new part must be placed here.
FLOORS = {
    "KnowledgeSAMLib": 0,  # the package root: __version__ and lazy names only
    "KnowledgeSAMLib.errors": 0,
    "KnowledgeSAMLib.choices": 0,
    "KnowledgeSAMLib._files": 0,
    "KnowledgeSAMLib._test_hooks": 0,
    "KnowledgeSAMLib.model": 1,
    "KnowledgeSAMLib.data": 1,
    "KnowledgeSAMLib.train": 2,
    "KnowledgeSAMLib.infer": 2,
    "KnowledgeSAMLib.evaluation": 2,
    "KnowledgeSAMLib.mrml": 3,
    "KnowledgeSAMLib.cli": 3,
}
# No known exceptions (model/download.py <-> model/sam_checkpoint.py was one until user_cache.py took the cache
# folder out of download.py). An entry here must name a cycle that exists: the test fails while one is stale.
KNOWN_CYCLES: list[set[str]] = []
SLICER_ONLY = {"slicer", "qt", "ctk", "vtk", "vtkmodules", "SampleData", "SegmentEditorEffects",
               "qSlicerSegmentationsEditorEffectsPythonQt", "PythonQt"}
QT_ONLY = {"qt", "ctk", "PythonQt", "SampleData", "SegmentEditorEffects", "qSlicerSegmentationsEditorEffectsPythonQt"}
BRIDGE = "KnowledgeSAMLib.mrml"
OPEN_TO_SLICER = ("KnowledgeSAMLib.mrml", "KnowledgeSAMLib.choices", "KnowledgeSAMLib.errors", "KnowledgeSAMLib.data")


@dataclass(frozen=True)
class Import:
    source: str  # importing module
    target: str  # imported module (for ``from package import name``: the submodule when there is one)
    line: int
    path: Path


def _module_name(path: Path) -> str:
    relative = path.relative_to(ROOT).with_suffix("")
    parts = list(relative.parts)
    if parts[0] in SLICER_FOLDERS:  # Slicer puts each module folder (and its Scripts/) on sys.path
        parts = parts[1:]
        if parts and parts[0] == "Scripts":
            parts = parts[1:]
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _is_package(path: Path) -> bool:
    return path.name == "__init__.py"


def _files() -> list[Path]:
    found = sorted((ROOT / LIBRARY).rglob("*.py"))
    for folder in SLICER_FOLDERS:
        found += sorted((ROOT / folder).rglob("*.py"))
    return [p for p in found if "__pycache__" not in p.parts]


MODULES = {_module_name(p): p for p in _files()}


def _resolve(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = _module_name(path).split(".")
    if not _is_package(path):
        package = package[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(path: Path) -> list[Import]:
    """Every import statement of a file, at any depth (module level, in functions, in ``try`` blocks)."""
    source = _module_name(path)
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [Import(source, alias.name, node.lineno, path) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(path, node)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found.append(Import(source, submodule if submodule in MODULES else base, node.lineno, path))
    return found


ALL_IMPORTS = [imp for path in MODULES.values() for imp in imports_of(path)]


def floor(module: str) -> int | None:
    if module.split(".")[0] != LIBRARY:
        return SLICER_FLOOR if module in MODULES else None
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        if ".".join(parts[:end]) in FLOORS:
            return FLOORS[".".join(parts[:end])]
    return None


def _where(imp: Import) -> str:
    return f"{imp.path.relative_to(ROOT)}:{imp.line} imports {imp.target}"


def test_every_library_module_has_a_floor():
    unplaced = sorted(m for m in MODULES if m.startswith(LIBRARY) and floor(m) is None)
    assert not unplaced, f"place these in FLOORS (and docs/dev/LAYERS.md): {unplaced}"


def test_no_import_runs_upward():
    upward = [_where(imp) + f" (floor {floor(imp.source)} -> {floor(imp.target)})" for imp in ALL_IMPORTS
              if imp.target.split(".")[0] == LIBRARY and floor(imp.target) > floor(imp.source)]
    assert not upward, "imports that climb a floor:\n" + "\n".join(upward)


def _cycles(edges: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components = []
    for start in edges:
        if start in index:
            continue
        work = [(start, iter(sorted(edges[start])))]
        index[start] = low[start] = len(index)
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = len(index)
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(edges.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == node:
                        break
                if len(component) > 1:
                    components.append(component)
    return components


def library_graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = {m: set() for m in MODULES if m.startswith(LIBRARY)}
    for imp in ALL_IMPORTS:
        if imp.source in edges and imp.target in edges and imp.target != imp.source:
            edges[imp.source].add(imp.target)
    return edges


def test_no_import_cycles_in_the_library():
    cycles = _cycles(library_graph())
    unexpected = [sorted(c) for c in cycles if c not in KNOWN_CYCLES]
    assert not unexpected, f"import cycles (function-level imports included): {unexpected}"
    stale = [sorted(c) for c in KNOWN_CYCLES if c not in cycles]
    assert not stale, f"these known cycles are gone: remove them from KNOWN_CYCLES {stale}"


def test_the_cycle_finder_finds_cycles():
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [{"a", "b", "c"}]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_slicer_qt_vtk_only_in_the_slicer_folders_and_the_bridge():
    misplaced = [_where(imp) for imp in ALL_IMPORTS
                 if imp.target.split(".")[0] in SLICER_ONLY and imp.source.startswith(LIBRARY)
                 and not (imp.source == BRIDGE or imp.source.startswith(BRIDGE + "."))]
    assert not misplaced, "Slicer/VTK/Qt outside the Slicer folders and the MRML bridge:\n" + "\n".join(misplaced)
    qt_in_bridge = [_where(imp) for imp in ALL_IMPORTS
                    if imp.source.startswith(BRIDGE) and imp.target.split(".")[0] in QT_ONLY]
    assert not qt_in_bridge, "the MRML bridge must stay Qt-free (it runs on slicer-core):\n" + "\n".join(qt_in_bridge)


def test_the_bridge_does_not_use_the_slicer_application():
    uses = []
    for module, path in MODULES.items():
        if module == BRIDGE or module.startswith(BRIDGE + "."):
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.Attribute) and node.attr in ("app", "mrmlScene", "modules") \
                        and isinstance(node.value, ast.Name) and node.value.id == "slicer":
                    uses.append(f"{path.relative_to(ROOT)}:{node.lineno} slicer.{node.attr}")
    assert not uses, "the bridge takes the scene as an argument instead:\n" + "\n".join(uses)


def test_slicer_folders_reach_the_library_through_the_bridge():
    past = [_where(imp) for imp in ALL_IMPORTS
            if floor(imp.source) == SLICER_FLOOR and imp.target.startswith(LIBRARY + ".")
            and not imp.target.startswith(OPEN_TO_SLICER)]
    assert not past, "Slicer files reaching past KnowledgeSAMLib.mrml:\n" + "\n".join(past)


@pytest.mark.parametrize("module", ["KnowledgeSAMLib.infer.engine", "KnowledgeSAMLib.cli.segment"])
def test_the_graph_sees_function_level_and_relative_imports(module):
    targets = {imp.target for imp in ALL_IMPORTS if imp.source == module}
    assert "KnowledgeSAMLib.infer.request" in targets or "KnowledgeSAMLib.infer" in targets, targets


FUNCTION_LINES = 80
SHORT_FUNCTIONS = ("KnowledgeSAMLib/", "KnowledgeSAM/", "SegmentEditorKnowledgeSAM/")


def test_functions_of_the_library_and_the_front_ends_stay_short():
    """Issue 18's target: no function over 80 lines (docstring included) in the library or the extension."""
    long = []
    for module, path in MODULES.items():
        if not path.relative_to(ROOT).as_posix().startswith(SHORT_FUNCTIONS):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > FUNCTION_LINES:
                    long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name} ({length} lines)")
    assert not long, f"split these functions (at most {FUNCTION_LINES} lines):\n" + "\n".join(long)


FILE_LINES = {"KnowledgeSAM/KnowledgeSAM.py": 600, "KnowledgeSAMLib/mrml/": 450}


def test_the_module_file_and_the_mrml_bridge_stay_small():
    """Issue 18's targets: the module file ≤ 600 lines, each file of the MRML bridge ≤ 450."""
    large = []
    for where, limit in FILE_LINES.items():
        paths = sorted((ROOT / where).glob("*.py")) if where.endswith("/") else [ROOT / where]
        assert paths, where
        for path in paths:
            lines = len(path.read_text(encoding="utf-8").splitlines())
            if lines > limit:
                large.append(f"{path.relative_to(ROOT)}: {lines} lines (at most {limit})")
    assert not large, "\n".join(large)


def _private_library_imports(path: Path, root: Path = ROOT) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith(LIBRARY):
            parts = node.module.split(".") + [alias.name for alias in node.names]
        elif isinstance(node, ast.Import):
            parts = [p for alias in node.names if alias.name.startswith(LIBRARY) for p in alias.name.split(".")]
        else:
            continue
        if any(part.startswith("_") and not part.startswith("__") for part in parts):
            found.append(f"{path.relative_to(root)}:{node.lineno} {'.'.join(parts)}")
    return found


def test_bench_uses_only_the_public_api():
    """Issue 18: what bench/ needs from the library is public (no ``_name`` imported, no ``_module`` reached)."""
    paths = sorted((ROOT / "bench").rglob("*.py"))
    assert paths
    private = [hit for path in paths for hit in _private_library_imports(path)]
    assert not private, "bench/ imports private library names:\n" + "\n".join(private)


def test_the_private_import_finder_finds_private_imports(tmp_path):
    probe = tmp_path / "probe.py"
    probe.write_text("from KnowledgeSAMLib.cli.demo import _phantom\nimport KnowledgeSAMLib._files\n"
                     "from KnowledgeSAMLib.infer import Segmenter\n", encoding="utf-8")
    assert len(_private_library_imports(probe, tmp_path)) == 2


def test_model_constructors_are_keyword_only_with_an_arguments_block():
    """Issue 18: ``model/`` reads like segment-anything's ``modeling/``: every constructor takes keyword-only
    arguments after ``self`` and describes them in an "Arguments:" block (its own docstring or its class's)."""
    paths = sorted((ROOT / LIBRARY / "model").rglob("*.py"))
    assert paths
    found = []
    for path in paths:
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not isinstance(node, ast.ClassDef):
                continue
            for init in node.body:
                if not (isinstance(init, (ast.FunctionDef, ast.AsyncFunctionDef)) and init.name == "__init__"):
                    continue
                where = f"{path.relative_to(ROOT)}:{init.lineno} {node.name}"
                positional = [a.arg for a in init.args.posonlyargs + init.args.args][1:]
                if init.args.vararg is not None:
                    positional.append(f"*{init.args.vararg.arg}")
                if positional:
                    found.append(f"{where}: positional parameters {', '.join(positional)}")
                docs = (ast.get_docstring(init) or "") + (ast.get_docstring(node) or "")
                if "Arguments:" not in docs:
                    found.append(f"{where}: no 'Arguments:' block")
    assert not found, "model constructors that break the keyword-only / Arguments rule:\n" + "\n".join(found)


def test_bench_imports_only_names_a_module_exports():
    """Where a library module lists its public names (``__all__``), bench/ takes only those (or submodules)."""
    import importlib.util

    outside = []
    for path in sorted((ROOT / "bench").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.ImportFrom) and (node.module or "").startswith(LIBRARY)):
                continue
            exported = getattr(importlib.import_module(node.module), "__all__", None)
            for alias in node.names:
                if exported is None or alias.name in exported:
                    continue
                if importlib.util.find_spec(f"{node.module}.{alias.name}") is None:
                    outside.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.module}.{alias.name}")
    assert not outside, "bench/ imports names its module does not export:\n" + "\n".join(outside)
