"""The annotator's loop in Slicer (issue 23), headless on slicer-core: the record that tells the annotator's slices
from a result (KnowledgeSAMLib/mrml/loop.py), and the Segment Editor effect's Update, "structure absent here" and
"next slice to check" (KnowledgeSAMSlicer/editoreffect.py) on ``vtkSlicerSegmentEditorLogic`` with the inference
process running a stand-in propagation (standins.nearestLabelledSlice: every slice copies its nearest labelled
slice, confidence 1 / (1 + distance)).

The Update must be one undo step, change only the slab between the corrected slice's labelled neighbours, and keep
every slice the annotator touched exactly as drawn."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from KnowledgeSAMLib import mrml  # noqa: E402

from slicer_stubs import FakeBar, FakeTimer, ViewRecorder, drive, load_module, stub_slicer_python_layer  # noqa: E402
from test_slicer_mrml import add_segment, add_volume, new_segmentation  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "KnowledgeSAM"))

from KnowledgeSAMSlicer import editoreffect, standins, views  # noqa: E402
from KnowledgeSAMSlicer import worker as monitors  # noqa: E402

SHAPE = (10, 20, 20)


@pytest.fixture(scope="module")
def worker(slicer_worker):
    return slicer_worker


def square(k: int, rows: slice, cols: slice) -> np.ndarray:
    mask = np.zeros(SHAPE, np.uint8)
    mask[k, rows, cols] = 1
    return mask


class Loop:
    """A segment 'kidney' drawn on slices 3 and 7 (two shapes), the Segment Editor's logic and node, an axial slice
    view, and the effect's presenter with the stand-in propagation."""

    def __init__(self, module, worker):
        self.scene = mrml.headless_scene()
        self.volume = add_volume(self.scene, np.zeros(SHAPE, np.int16), np.diag([1.0, 1.0, 2.0, 1.0]), "source")
        self.segmentation = new_segmentation(self.scene, self.volume, "segmentation")
        self.drawn = square(3, slice(5, 15), slice(5, 15)) | square(7, slice(2, 8), slice(3, 17))
        self.kidney = add_segment(self.segmentation, self.drawn, self.volume, "kidney", (1, 0, 0))
        self.node = self.scene.AddNewNodeByClass("vtkMRMLSegmentEditorNode")
        self.logic = slicer.vtkSlicerSegmentEditorLogic()
        self.logic.SetMRMLScene(self.scene)
        self.logic.SetSegmentEditorNode(self.node)
        self.node.SetAndObserveSegmentationNode(self.segmentation)
        self.node.SetAndObserveSourceVolumeNode(self.volume)
        self.node.SetSelectedSegmentID(self.kidney)
        self.logic.SetSegmentationNode(self.segmentation)
        self.logic.SetSourceVolumeNode(self.volume)
        self.sliceNode = self.scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")  # axial by default
        self.view = ViewRecorder()
        self.results = []  # what the inference process returned, run after run
        self.monitor = monitors.JobMonitor(FakeBar(), self._finished, FakeTimer(), worker=worker)
        self.presenter = editoreffect.EffectPresenter(
            editoreffect.EditorLogicAccess(self.logic), self.monitor, self.view, module.KnowledgeSAMLogic,
            sliceInView=lambda volume, axis: views.currentSliceIndex(volume, axis, self.sliceNode),
            jumpToSlice=lambda volume, axis, index: views.jumpToSlice(volume, axis, index, self.sliceNode))
        self.options = editoreffect.EffectOptions(device="cpu", mode="propagate", engine=standins.nearestLabelledSlice)

    def _finished(self, job):
        try:
            self.results.append(job.result())
        except Exception as error:  # the presenter reports it
            self.results.append(error)
        self.presenter.onJobFinished(job)

    def mask(self) -> np.ndarray:
        labels = mrml.labels_from_segmentation_node(self.segmentation, [self.kidney], self.volume)
        return labels.mask(labels.segments[0]).astype(np.uint8)

    def showSlice(self, k: int) -> None:
        views.jumpToSlice(self.volume, "axial", k, self.sliceNode)

    def paint(self, mask: np.ndarray) -> None:
        """The annotator edits the segment with another effect (one undo step of its own)."""
        self.logic.SaveStateForUndo()
        modifier = slicer.vtkOrientedImageData()
        self.logic.ResetModifierLabelmapToDefault()
        assert slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(
            mrml.oriented_image_from_mask(mask, self.volume), self.logic.GetModifierLabelmap(), modifier)
        self.logic.ModifySegmentByLabelmap(self.segmentation, self.kidney, modifier, self.logic.ModificationModeSet,
                                           True, False)

    def run(self, start) -> None:
        assert start(self.options), self.view.statuses
        drive(self.monitor)

    def applied(self) -> np.ndarray:
        """Preview and Apply: the first result."""
        self.run(self.presenter.preview)
        assert self.presenter.apply(), self.view.statuses
        return self.mask()


@pytest.fixture()
def loop(monkeypatch, worker):
    stub_slicer_python_layer(monkeypatch)
    module = load_module(monkeypatch, "KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")
    return Loop(module, worker)


def state(loop: Loop) -> mrml.SegmentState:
    return mrml.segment_states(loop.segmentation, [loop.kidney], loop.volume, "axial")[0]


# ---------------------------------------------------------------------------------------------- the record


def test_without_a_record_every_labelled_slice_is_the_annotators(loop):
    first = state(loop)
    assert first.drawn == [3, 7] and first.absent == [] and first.changed == [] and not first.record.written
    assert mrml.corrected_slices([first]) == []


def test_after_a_write_only_changed_slices_join_the_annotators_and_emptied_ones_are_absent(loop):
    result = loop.applied()
    assert result[0:10].any(axis=(1, 2)).all()
    recorded = state(loop)
    assert recorded.record.written and recorded.drawn == [3, 7] and recorded.changed == []
    assert mrml.read_record(loop.segmentation.GetSegmentation().GetSegment(loop.kidney)).drawn == [3, 7]
    edited = result.copy()
    edited[5] = square(5, slice(0, 4), slice(0, 4))[5]  # corrected
    edited[9] = 0  # erased: the structure is not there
    loop.paint(edited)
    now = state(loop)
    assert now.changed == [5, 9] and now.emptied == [9]
    assert now.drawn == [3, 5, 7] and now.absent == [9]
    assert mrml.corrected_slices([now]) == [5, 9]


def test_a_record_made_on_another_axis_or_grid_is_ignored(loop):
    loop.applied()
    assert state(loop).record.written
    other_axis = mrml.segment_states(loop.segmentation, [loop.kidney], loop.volume, "coronal")[0]
    assert not other_axis.record.written and other_axis.drawn == other_axis.labelled
    segment = loop.segmentation.GetSegmentation().GetSegment(loop.kidney)
    segment.SetTag(mrml.RECORD_TAG, "{not json")
    assert not state(loop).record.written


def test_the_update_request_holds_the_annotators_slices_and_the_absent_ones_emptied(loop):
    loop.applied()
    segment = state(loop)
    mrml.mark_absent(loop.segmentation, segment, [9])
    prepared = mrml.prepare_update(loop.volume, loop.segmentation, [state(loop)], "axial", device="cpu")
    request = prepared.request
    assert request.mode == "propagate" and list(request.reference_slices) == [3, 7]
    assert request.absent_slices == {"kidney": [9]}
    assert not request.reference_labels.layers[:, 9].any(), "a labelled slice marked absent would be refused"
    assert request.reference_labels.layers[:, 8].any(), "the earlier result is the rest of the labels"
    assert prepared.output_segmentation_node is loop.segmentation


# ---------------------------------------------------------------------------------------------- the effect


def test_update_recomputes_only_the_slab_keeps_the_drawn_slices_and_is_one_undo_step(loop):
    first = loop.applied()
    np.testing.assert_array_equal(first[[3, 7]], loop.drawn[[3, 7]])
    corrected = first.copy()
    corrected[5] = square(5, slice(0, 4), slice(0, 4))[5]  # the annotator redraws slice 5
    loop.paint(corrected)
    loop.run(loop.presenter.update)
    after = loop.mask()
    assert loop.view.status.startswith("Updated slices 4..6 around slice(s) 5"), loop.view.statuses
    assert loop.results[0].provenance["computed"] == [0, 10]
    assert loop.results[-1].provenance["computed"] == [4, 7], "the inference process segmented the slab only"
    outside = [0, 1, 2, 3, 7, 8, 9]  # the slab between the labelled neighbours 3 and 7 is 4..6
    np.testing.assert_array_equal(after[outside], corrected[outside])
    np.testing.assert_array_equal(after[5], corrected[5])  # kept exactly as drawn
    np.testing.assert_array_equal(after[[3, 7]], loop.drawn[[3, 7]])
    np.testing.assert_array_equal(after[4], loop.drawn[3])  # 3 and 5 are as near: the lower one
    np.testing.assert_array_equal(after[6], corrected[5])  # was slice 7's shape, now the correction's
    assert not np.array_equal(after[6], corrected[6])
    assert state(loop).drawn == [3, 5, 7] and state(loop).changed == []
    loop.logic.Undo()  # one step back: the segment as the annotator left it
    np.testing.assert_array_equal(loop.mask(), corrected)
    assert state(loop).changed == [5], "the record is restored with the segment"


def test_absent_slices_reach_the_request_stay_empty_and_stop_propagation(loop):
    first = loop.applied()
    assert first[8:].any()
    loop.showSlice(8)
    assert loop.presenter.markAbsent(loop.options) == [8]  # the slice in view
    assert (8, "slice 8: absent") in loop.presenter.sliceRows("axial")
    loop.run(loop.presenter.update)
    after = loop.mask()
    assert not after[8:].any(), "slice 8 is empty, and nothing walks past it to slice 9"
    np.testing.assert_array_equal(after[:8], first[:8])
    assert state(loop).absent == [8]
    loop.presenter.clearAbsent(loop.options)
    assert state(loop).absent == [] and (8, "slice 8: absent") not in loop.presenter.sliceRows("axial")


def test_a_preview_passes_the_absent_slices_too(loop):
    loop.presenter.markAbsent(loop.options, index=1)
    loop.run(loop.presenter.preview)
    mask = loop.presenter.previewMask
    assert not mask[:2].any() and mask[2].any()


def test_next_slice_to_check_jumps_to_the_slice_most_likely_wrong_that_is_not_yours_or_absent(loop):
    loop.applied()
    confidence = mrml.read_record(loop.segmentation.GetSegmentation().GetSegment(loop.kidney)).confidence
    assert confidence[0] == pytest.approx(0.25) and confidence[3] == pytest.approx(1.0)  # distance 3 and 0
    # expected wrong voxels per slice: 0-2: 75, 67, 50 (100 voxels each); 4-6: 50, 67, 42; 8-9: 42, 56. Slice 0 is the
    # least sure, but a correction of slice 1 re-segments both its neighbours: the most likely-wrong voxels around it
    assert loop.presenter.nextSliceToCheck(loop.options) == 1
    assert views.currentSliceIndex(loop.volume, "axial", loop.sliceNode) == 1
    loop.presenter.markAbsent(loop.options, index=0)  # now slices 1-2 hold 67 + 50, slices 4-6 hold 159
    assert loop.presenter.nextSliceToCheck(loop.options) == 5
    assert views.currentSliceIndex(loop.volume, "axial", loop.sliceNode) == 5
    rows = dict(loop.presenter.sliceRows("axial"))
    assert rows[1] == "slice 1: 0.33" and rows[3] == "slice 3: yours" and rows[0] == "slice 0: absent"


def _state_of(name, areas, confidence, drawn=(), absent=()):
    record = mrml.SliceRecord(axis="axial", grid="g", confidence=confidence, written=True, drawn=list(drawn),
                              absent=list(absent))
    return mrml.SegmentState(name, name, np.zeros(SHAPE, np.uint8), record, sorted(areas), list(drawn), list(absent),
                             [], [], dict(areas))


def test_slice_to_check_weighs_confidence_by_area_and_sums_the_segments():
    # cortex: slice 2 is the least sure (0.2) but 5 voxels; slice 6 is surer (0.7) and 400 voxels: 4 vs 120
    cortex = _state_of("cortex", {2: 5, 4: 300, 6: 400}, {2: 0.2, 4: 1.0, 6: 0.7}, drawn=[4])
    assert mrml.slice_to_check([cortex]) == ("cortex", 6, pytest.approx(0.7))
    medulla = _state_of("medulla", {2: 100, 6: 10}, {2: 0.1, 6: 0.9})
    # medulla's errors also count 4 slices away, at exp(-4/3) = 0.26 (cortex's own slice 4 parts its slices 2 and 6)
    assert mrml.slice_to_check([cortex, medulla])[:2] == ("cortex", 6)  # 120 + 1 + 0.26 * 90 against 4 + 90 + 0.26
    medulla = _state_of("medulla", {2: 200, 6: 10}, {2: 0.1, 6: 0.9})
    assert mrml.slice_to_check([cortex, medulla]) == ("medulla", 2, pytest.approx(0.1))  # 4 + 180 + 0.26 vs 168
    # a slice that is one segment's own counts nothing for it, but still for the others
    medulla = _state_of("medulla", {2: 200, 6: 10}, {2: 0.1, 6: 0.9}, drawn=[2])
    assert mrml.slice_to_check([cortex, medulla])[:2] == ("cortex", 6)
    assert mrml.slice_to_check([_state_of("x", {1: 9}, {1: 0.5}, absent=[1])]) is None


def test_update_with_nothing_changed_takes_the_slice_in_view_as_checked(loop):
    first = loop.applied()
    loop.showSlice(5)
    loop.run(loop.presenter.update)
    assert loop.view.status.startswith("Updated slices 4..6 around slice(s) 5"), loop.view.statuses
    assert state(loop).drawn == [3, 5, 7]
    np.testing.assert_array_equal(loop.mask()[5], first[5])


def test_update_refusals_change_nothing(loop):
    before = loop.mask()
    assert not loop.presenter.update(loop.options)
    assert "press Preview, then Apply" in loop.view.status
    loop.applied()
    loop.presenter._sliceInView = None  # no slice view, nothing changed
    assert not loop.presenter.update(loop.options)
    assert "Nothing changed since the last result" in loop.view.status
    assert not loop.monitor.busy and before is not None


def test_an_edit_during_the_update_is_never_overwritten(loop):
    first = loop.applied()
    corrected = first.copy()
    corrected[5] = square(5, slice(0, 4), slice(0, 4))[5]
    loop.paint(corrected)
    assert loop.presenter.update(loop.options)
    again = corrected.copy()
    again[4] = 0  # the annotator keeps working while the update runs
    loop.paint(again)
    drive(loop.monitor)
    assert "edited during the update; nothing was written" in loop.view.status
    np.testing.assert_array_equal(loop.mask(), again)


# ---------------------------------------------------------------------------------------------- the module panel


class PanelLoop:
    """The module panel's presenter on a target with 'kidney' drawn on slices 3 and 7 of a reference segmentation
    (the annotator's slices), an axial slice view, the stand-in propagation; the output is a new segmentation."""

    def __init__(self, module, worker):
        import types

        from KnowledgeSAMSlicer import panel

        self.scene = mrml.headless_scene()
        self.volume = add_volume(self.scene, np.zeros(SHAPE, np.int16), np.diag([1.0, 1.0, 2.0, 1.0]), "ct")
        self.reference = new_segmentation(self.scene, self.volume, "reference")
        self.drawn = square(3, slice(5, 15), slice(5, 15)) | square(7, slice(2, 8), slice(3, 17))
        self.kidney = add_segment(self.reference, self.drawn, self.volume, "kidney", (1, 0, 0))
        self.sliceNode = self.scene.AddNewNodeByClass("vtkMRMLSliceNode", "Red")
        self.parameters = types.SimpleNamespace(
            targetVolume=self.volume, referenceVolume=None, referenceSegmentation=self.reference,
            outputSegmentation=None, referenceSliceMode=panel.SLICE_ALL, referenceSliceIndex=0, axis="axial",
            mode="propagate", useSliceRange=False, sliceRangeStart=0, sliceRangeStop=0, roiNode=None,
            absentSlices="{}")
        self.view = ViewRecorder()
        self.monitor = monitors.JobMonitor(FakeBar(), lambda job: self.presenter.onJobFinished(job), FakeTimer(),
                                           worker=worker)
        self.presenter = panel.PanelPresenter(
            module.KnowledgeSAMLogic(), self.monitor, self.view, lambda: self.parameters, lambda: [self.kidney],
            currentSliceIndex=lambda volume, axis: views.currentSliceIndex(volume, axis, self.sliceNode),
            jumpToSlice=lambda volume, axis, index: views.jumpToSlice(volume, axis, index, self.sliceNode))

    def run(self, start) -> None:
        assert start("cpu", engine=standins.nearestLabelledSlice), self.view.statuses
        drive(self.monitor)

    @property
    def output(self):
        return self.parameters.outputSegmentation

    def outputId(self) -> str:
        return self.output.GetSegmentation().GetSegmentIdBySegmentName("kidney")

    def mask(self) -> np.ndarray:
        labels = mrml.labels_from_segmentation_node(self.output, [self.outputId()], self.volume)
        return labels.mask(labels.segments[0]).astype(np.uint8)

    def correct(self, mask: np.ndarray) -> None:
        """The annotator edits the output segment (e.g. in the Segment Editor)."""
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        assert logic.SetBinaryLabelmapToSegment(mrml.oriented_image_from_mask(mask, self.volume), self.output,
                                                self.outputId(), logic.MODE_REPLACE)

    def provenance(self) -> dict:
        import json

        segment = self.output.GetSegmentation().GetSegment(self.outputId())
        return json.loads(mrml.segment_tag(segment, "KnowledgeSAM.Provenance"))


@pytest.fixture()
def panel_loop(monkeypatch, worker):
    stub_slicer_python_layer(monkeypatch)
    module = load_module(monkeypatch, "KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")
    return PanelLoop(module, worker)


def test_panel_update_recomputes_only_the_slab_and_undo_reverts_it(panel_loop):
    loop = panel_loop
    assert not loop.presenter.state().updateEnabled  # nothing to update yet
    loop.run(loop.presenter.apply)
    first = loop.mask()
    record = mrml.read_record(loop.output.GetSegmentation().GetSegment(loop.outputId()))
    assert record.written and record.drawn == [3, 7]  # the reference's slices are the annotator's
    assert loop.presenter.state().updateEnabled
    corrected = first.copy()
    corrected[5] = square(5, slice(0, 4), slice(0, 4))[5]
    loop.correct(corrected)
    loop.run(loop.presenter.update)
    assert loop.view.status.startswith("Updated slices 4..6 of 1 segment(s)"), loop.view.statuses
    assert loop.provenance()["computed"] == [4, 7] and loop.provenance()["update"]["slab"] == [4, 7]
    after = loop.mask()
    outside = [0, 1, 2, 3, 7, 8, 9]
    np.testing.assert_array_equal(after[outside], corrected[outside])
    np.testing.assert_array_equal(after[5], corrected[5])
    np.testing.assert_array_equal(after[6], corrected[5])
    assert mrml.segment_states(loop.output, [loop.outputId()], loop.volume, "axial")[0].drawn == [3, 5, 7]
    assert loop.presenter.undo(confirm=lambda question: True)  # 'Undo last run': one step
    np.testing.assert_array_equal(loop.mask(), corrected)


def test_panel_absent_marks_reach_apply_and_update_and_are_cleared(panel_loop):
    loop = panel_loop
    assert loop.presenter.markAbsent(index=9) == {"kidney": [9]}
    assert loop.presenter.absentText() == "kidney: 9"
    loop.run(loop.presenter.apply)
    assert loop.provenance()["absent"] == [9] and not loop.mask()[9].any() and loop.mask()[8].any()
    loop.sliceNode.JumpSliceByOffsetting(*mrml.slice_centre_ras(loop.volume, 8, "axial"))
    loop.presenter.markAbsent()  # the slice in view
    assert loop.presenter.absentText() == "kidney: 8, 9"
    loop.run(loop.presenter.update)
    assert loop.provenance()["absent"] == [8, 9] and loop.provenance()["update"]["slab"] == [8, 9]
    assert not loop.mask()[8:].any() and loop.mask()[:8].any()
    loop.presenter.clearAbsent()
    assert loop.presenter.absentText() == "none"
    assert mrml.segment_states(loop.output, [loop.outputId()], loop.volume, "axial")[0].absent == []


def test_panel_next_slice_to_check_jumps_to_the_slice_most_likely_wrong(panel_loop):
    loop = panel_loop
    assert loop.presenter.nextSliceToCheck() is None and "Apply first" in loop.view.status
    loop.run(loop.presenter.apply)
    rows = dict(loop.presenter.sliceRows())
    assert rows[0] == "kidney slice 0: 0.25" and 3 not in rows and 7 not in rows  # yours: not listed
    assert loop.presenter.nextSliceToCheck() == 1  # the middle of slices 0-2, as in the effect
    assert views.currentSliceIndex(loop.volume, "axial", loop.sliceNode) == 1
    loop.presenter.markAbsent(index=0)
    assert loop.presenter.nextSliceToCheck() == 5
    assert views.currentSliceIndex(loop.volume, "axial", loop.sliceNode) == 5
