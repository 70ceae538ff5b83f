"""Two Slicer-side helpers that had no test: ``views`` (which slice a view shows, on slicer-core's slice nodes)
and ``sampledata.register`` (what it hands to Sample Data: a stand-in records it)."""

from __future__ import annotations

import sys
import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from KnowledgeSAMLib import mrml  # noqa: E402
from KnowledgeSAMLib.errors import InputError  # noqa: E402

from test_slicer_mrml import add_volume  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "KnowledgeSAM"))

from KnowledgeSAMSlicer import sampledata, views  # noqa: E402


def slice_view(scene, rotation: np.ndarray, centre):
    node = scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
    matrix = node.GetSliceToRAS()
    for r in range(3):
        for c in range(3):
            matrix.SetElement(r, c, float(rotation[r, c]))
        matrix.SetElement(r, 3, float(centre[r]))
    node.UpdateMatrices()
    return node


AXIAL = np.array([[-1.0, 0, 0], [0, 1, 0], [0, 0, 1]])  # Slicer's axial view: normal along S


def test_the_slice_a_view_shows_is_found_along_each_axis():
    scene = mrml.headless_scene()
    volume = add_volume(scene, np.zeros((12, 20, 24), np.int16), np.diag([1.0, 1.0, 2.5, 1.0]), "ct")
    view = slice_view(scene, AXIAL, (3.0, 4.0, 7.5))  # S = 7.5 mm: slice k = 3
    assert views.axisOfSliceNode(view) == "axial"
    assert views.currentSliceIndex(volume, "axial", view) == 3
    coronal = slice_view(scene, np.array([[-1.0, 0, 0], [0, 0, 1], [0, 1, 0]]), (0.0, 6.0, 0.0))
    assert views.axisOfSliceNode(coronal) == "coronal"
    assert views.currentSliceIndex(volume, "coronal", coronal) == mrml.slice_index_at_ras(volume, (0, 6, 0), "coronal")


def test_an_oblique_view_and_a_view_outside_the_volume_are_refused():
    scene = mrml.headless_scene()
    volume = add_volume(scene, np.zeros((12, 20, 24), np.int16), np.diag([1.0, 1.0, 2.5, 1.0]), "ct")
    angle = np.radians(10)
    tilted = AXIAL @ np.array([[1, 0, 0], [0, np.cos(angle), -np.sin(angle)], [0, np.sin(angle), np.cos(angle)]])
    with pytest.raises(views.ObliqueViewError, match="10.0 degrees oblique"):
        views.currentSliceIndex(volume, "axial", slice_view(scene, tilted, (0, 0, 5)))
    with pytest.raises(InputError, match="outside volume"):
        views.currentSliceIndex(volume, "axial", slice_view(scene, AXIAL, (0, 0, 500)))


def test_sample_data_registration_hands_over_checked_local_files(monkeypatch):
    calls = {"categories": [], "sources": []}
    logic = types.SimpleNamespace(
        registerCustomSampleDataCategory=lambda category, title: calls["categories"].append((category, title)),
        registerCustomSampleDataSource=lambda **kwargs: calls["sources"].append(kwargs))
    monkeypatch.setitem(sys.modules, "SampleData", types.SimpleNamespace(SampleDataLogic=logic))
    folder = ROOT / "KnowledgeSAM" / "Resources" / "SampleData"
    sampledata.register(str(folder), str(ROOT / "KnowledgeSAM" / "Resources" / "Icons"))
    assert calls["categories"] == [(sampledata.CATEGORY, "KnowledgeSAM")]
    names = [source["sampleName"] for source in calls["sources"]]
    assert sampledata.SAMPLE_NAME in names
    for source in calls["sources"]:
        assert Path(source["thumbnailFileName"]).is_file()
        for uri, checksum, fileName in zip(source["uris"], source["checksums"], source["fileNames"]):
            path = Path(uri.replace("file://", ""))
            assert path.is_file() and path.name == fileName
            assert checksum == "SHA256:" + sampledata.sha256(path)
        assert sorted(source["loadFileTypes"]) == ["SegmentationFile", "VolumeFile"]


def test_the_segment_editor_undo_hook_is_offered_only_when_the_editor_edits_the_output(monkeypatch):
    """Ctrl+Z in the Segment Editor undoes a run only when the editor shows the run's output node."""
    scene = mrml.headless_scene()
    output = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "out")
    other = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "other")
    saved = []
    editor = types.SimpleNamespace(segmentationNode=lambda: shown[0], saveStateForUndo=lambda: saved.append(1))
    shown = [output]
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(SegmentEditorWidget=types.SimpleNamespace(
        editor=editor)), raising=False)
    prepared = types.SimpleNamespace(output_segmentation_node=output)
    hook = views.segmentEditorUndoHook(prepared)
    assert hook is not None
    hook()
    assert saved == [1]
    shown[0] = other
    assert views.segmentEditorUndoHook(prepared) is None
    assert views.segmentEditorUndoHook(types.SimpleNamespace(output_segmentation_node=None)) is None
    assert views.segmentEditorUndoHook(None) is None
    monkeypatch.setattr(slicer, "modules", types.SimpleNamespace(), raising=False)
    assert views.segmentEditorUndoHook(prepared) is None
