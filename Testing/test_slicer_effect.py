"""The Segment Editor effect's behaviour (KnowledgeSAMSlicer/editoreffect.py), headless on slicer-core's
``vtkSlicerSegmentEditorLogic``: Preview in the inference process (stand-in engine), Apply through the editor
with masking by segment and by intensity, both overwrite modes, the slice range, one undo step; Cancel and a
scene closed during a run; refusals. The Qt effect (SegmentEditorEffect.py) only forwards to these methods,
with an adapter around ``qSlicerSegmentEditorScriptedEffect`` that makes the same calls."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from KnowledgeSAMLib import mrml  # noqa: E402

from slicer_stubs import FakeBar, FakeTimer, ViewRecorder, drive, load_module, stub_slicer_python_layer  # noqa: E402
from test_slicer_mrml import add_segment, add_volume, new_segmentation  # noqa: E402
from test_slicer_nothing_lost import scene_state  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "KnowledgeSAM"))

from KnowledgeSAMSlicer import editoreffect, standins  # noqa: E402
from KnowledgeSAMSlicer import worker as monitors  # noqa: E402

SHAPE = (10, 20, 20)


@pytest.fixture(scope="module")
def worker(slicer_worker):
    return slicer_worker


class Editor:
    """A segmentation with an 'editable region' (slices 0-6) and a 'kidney' drawn on slice 5, a source volume
    whose right half is bright, the Segment Editor's logic and node, and the effect's presenter on them."""

    def __init__(self, module, worker):
        self.scene = mrml.headless_scene()
        array = np.zeros(SHAPE, np.int16)
        array[:, :, 10:] = 100
        self.volume = add_volume(self.scene, array, np.diag([1.0, 1.0, 2.0, 1.0]), "source")
        self.segmentation = new_segmentation(self.scene, self.volume, "segmentation")
        self.region = np.zeros(SHAPE, np.uint8)
        self.region[0:7] = 1
        self.drawn = np.zeros(SHAPE, np.uint8)
        self.drawn[5, 5:15, 5:15] = 1
        self.regionId = add_segment(self.segmentation, self.region, self.volume, "editable region", (0, 0, 1))
        self.kidneyId = add_segment(self.segmentation, self.drawn, self.volume, "kidney", (1, 0, 0))
        self.node = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(self.scene)
        self.logic.SetSegmentEditorNode(self.node)
        self.node.SetAndObserveSegmentationNode(self.segmentation)
        self.node.SetAndObserveSourceVolumeNode(self.volume)
        self.node.SetSelectedSegmentID(self.kidneyId)
        self.logic.SetSegmentationNode(self.segmentation)
        self.logic.SetSourceVolumeNode(self.volume)
        self.view = ViewRecorder()
        self.monitor = monitors.JobMonitor(FakeBar(), lambda job: self.presenter.onJobFinished(job), FakeTimer(),
                                           worker=worker)
        self.presenter = editoreffect.EffectPresenter(editoreffect.EditorLogicAccess(self.logic), self.monitor,
                                                      self.view, module.KnowledgeSAMLogic)

    def segment(self, segmentId):
        labels = mrml.labels_from_segmentation_node(self.segmentation, [segmentId], self.volume)
        return labels.mask(labels.segments[0]).astype(np.uint8)

    def preview(self, engine=standins.fillEveryAxialSlice, **options):
        assert self.presenter.preview(editoreffect.EffectOptions(device="cpu", engine=engine, **options)), \
            self.view.statuses
        drive(self.monitor)
        return self.presenter.previewMask


@pytest.fixture()
def editor(monkeypatch, worker):
    stub_slicer_python_layer(monkeypatch)
    module = load_module(monkeypatch, "KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")
    return Editor(module, worker)


def filled(slices=slice(None)):
    expected = np.zeros(SHAPE, np.uint8)
    expected[slices, 5:15, 5:15] = 1
    return expected


def test_preview_shows_a_hidden_overlay_and_changes_no_segment(editor):
    segments = scene_state(editor.scene)[editor.segmentation.GetID()]
    mask = editor.preview()
    np.testing.assert_array_equal(mask, filled())
    assert editor.presenter.previewNode.GetHideFromEditors() and editor.presenter.canApply
    assert scene_state(editor.scene)[editor.segmentation.GetID()] == segments
    assert editor.view.status.startswith("Preview ready")


def test_apply_honours_the_editable_area_and_is_one_undo_step(editor):
    editor.node.SetMaskMode(slicer.vtkMRMLSegmentationNode.EditAllowedInsideSingleSegment)
    editor.node.SetMaskSegmentID(editor.regionId)
    editor.node.SetOverwriteMode(slicer.vtkMRMLSegmentEditorNode.OverwriteNone)  # the region must stay whole
    editor.preview()
    assert editor.presenter.apply()
    np.testing.assert_array_equal(editor.segment(editor.kidneyId), filled(slice(0, 7)))  # only in the region
    np.testing.assert_array_equal(editor.segment(editor.regionId), editor.region)  # other segments untouched
    assert editor.presenter.previewNode is None and not editor.presenter.canApply
    editor.logic.Undo()
    np.testing.assert_array_equal(editor.segment(editor.kidneyId), editor.drawn)


def test_apply_honours_the_intensity_range(editor):
    editor.node.SetSourceVolumeIntensityMask(True)
    editor.node.SetSourceVolumeIntensityMaskRange(50, 200)  # the bright right half only
    editor.preview()
    editor.presenter.apply()
    expected = filled()
    expected[:, :, :10] = 0
    expected[5, 5:15, 5:10] = 1  # "set" keeps the segment as drawn outside the editable voxels
    np.testing.assert_array_equal(editor.segment(editor.kidneyId), expected)


@pytest.mark.parametrize("overwrite", ["OverwriteNone", "OverwriteAllSegments"])
def test_the_overwrite_mode_decides_what_happens_to_other_segments(editor, overwrite):
    other = np.zeros(SHAPE, np.uint8)
    other[8:10, 0:20, 0:8] = 1  # overlaps the fill on slices 8-9, columns 5-7
    otherId = add_segment(editor.segmentation, other, editor.volume, "other", (0, 1, 0))
    editor.node.SetOverwriteMode(getattr(slicer.vtkMRMLSegmentEditorNode, overwrite))
    editor.preview()
    editor.presenter.apply()
    np.testing.assert_array_equal(editor.segment(editor.kidneyId), filled())
    if overwrite == "OverwriteNone":
        np.testing.assert_array_equal(editor.segment(otherId), other)
    else:
        np.testing.assert_array_equal(editor.segment(otherId), other & (1 - filled()))


def test_a_slice_range_keeps_the_segment_outside_it(editor):
    editor.preview(sliceRange=(2, 4))
    editor.presenter.apply()
    np.testing.assert_array_equal(editor.segment(editor.kidneyId), np.maximum(editor.drawn, filled(slice(2, 4))))


def test_cancel_during_the_computation_changes_nothing(editor):
    before = scene_state(editor.scene)
    assert editor.presenter.preview(editoreffect.EffectOptions(device="cpu", engine=standins.untilCancelled))
    drive(editor.monitor, until=lambda: editor.monitor.job.progress() == (1, 10))
    editor.presenter.cancel()
    drive(editor.monitor)
    assert editor.view.status == "Cancelled; nothing was changed."
    assert editor.presenter.previewMask is None and scene_state(editor.scene) == before


def test_closing_the_scene_during_the_computation_cancels_it_and_adds_nothing(editor):
    assert editor.presenter.preview(editoreffect.EffectOptions(device="cpu", engine=standins.untilCancelled))
    drive(editor.monitor, until=lambda: editor.monitor.job.progress() == (1, 10))
    editor.scene.Clear(0)
    assert editor.monitor.job.cancelled
    drive(editor.monitor)
    assert editor.presenter.previewNode is None and editor.presenter.previewMask is None
    assert editor.scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


def test_leaving_the_effect_discards_a_result_that_arrives_later(editor):
    before = scene_state(editor.scene)
    assert editor.presenter.preview(editoreffect.EffectOptions(device="cpu", engine=standins.fillEveryAxialSlice))
    editor.presenter.deactivate()
    drive(editor.monitor)
    assert editor.presenter.previewMask is None and scene_state(editor.scene) == before


def test_refusals_leave_no_temporary_node(editor):
    before = scene_state(editor.scene)
    roi = editor.scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far")
    roi.SetXYZ(500, 500, 500)
    roi.SetRadiusXYZ(3, 3, 3)
    before = scene_state(editor.scene)
    assert not editor.presenter.preview(editoreffect.EffectOptions(device="cpu", roiNode=roi,
                                                                   engine=standins.fillEveryAxialSlice))
    assert "lies outside target volume" in editor.view.status and editor.view.statuses[-1][1]
    assert not editor.presenter.preview(editoreffect.EffectOptions(prompt=editoreffect.PROMPT_OTHER,
                                                                   engine=standins.fillEveryAxialSlice))
    assert editor.view.status == "Choose a reference volume, segmentation and segment."
    assert scene_state(editor.scene) == before and not editor.monitor.busy


def test_apply_after_the_selected_segment_changed_is_refused(editor):
    editor.preview()
    editor.node.SetSelectedSegmentID(editor.regionId)
    assert not editor.presenter.apply()
    assert "selected segment changed" in editor.view.status
    np.testing.assert_array_equal(editor.segment(editor.regionId), editor.region)
