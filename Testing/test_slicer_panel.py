"""The module panel's behaviour (KnowledgeSAMSlicer/panel.py) on slicer-core's MRML, with the real Logic and the
real inference process (stand-in engines, run there): Apply -> write -> Undo; the one-click sample with the
default settings; Cancel; the scene closed or the module left during a run; a crash; refusals before compute;
which controls are enabled. The Qt widget only forwards to these methods (KnowledgeSAM.py)."""

from __future__ import annotations

import types
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from KnowledgeSAMLib import mrml  # noqa: E402

from slicer_stubs import FakeBar, FakeTimer, ViewRecorder, drive, load_module, stub_slicer_python_layer  # noqa: E402
from test_slicer_mrml import add_segment, add_volume, new_segmentation  # noqa: E402
from test_slicer_nothing_lost import scene_state  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "KnowledgeSAM" / "Resources" / "SampleData"


@pytest.fixture(scope="module")
def worker(slicer_worker):
    return slicer_worker


@pytest.fixture()
def module(monkeypatch):
    stub_slicer_python_layer(monkeypatch)
    return load_module(monkeypatch, "KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")


class Panel:
    """The presenter wired as the widget wires it, with a parameter node made of plain attributes."""

    def __init__(self, module, worker, scene, **fields):
        from KnowledgeSAMSlicer import panel, standins, worker as monitors

        self.standins = standins
        self.scene = scene
        self.parameters = types.SimpleNamespace(
            targetVolume=None, referenceVolume=None, referenceSegmentation=None, outputSegmentation=None,
            referenceSliceMode=module.KnowledgeSAMParameterNode.referenceSliceMode, referenceSliceIndex=0,
            axis="axial", mode="auto", useSliceRange=False, sliceRangeStart=0, sliceRangeStop=0, roiNode=None)
        for key, value in fields.items():
            setattr(self.parameters, key, value)
        self.checked = []
        self.view = ViewRecorder()
        self.monitor = monitors.JobMonitor(FakeBar(), lambda job: self.presenter.onJobFinished(job), FakeTimer(),
                                           worker=worker)
        self.presenter = panel.PanelPresenter(module.KnowledgeSAMLogic(), self.monitor, self.view,
                                              lambda: self.parameters, lambda: self.checked)
        scene.AddObserver(slicer.vtkMRMLScene.StartCloseEvent, lambda caller, event: self.presenter.onSceneStartClose())

    def apply(self, engine):
        return self.presenter.apply("cpu", engine=engine)


@pytest.fixture()
def case():
    scene = mrml.headless_scene()
    rng = np.random.default_rng(3)
    volume = add_volume(scene, rng.normal(0, 10, (8, 28, 28)).astype(np.int16), np.diag([0.7, 0.7, 2.0, 1.0]), "ct")
    reference = new_segmentation(scene, volume, "reference")
    mask = np.zeros((8, 28, 28), np.uint8)
    mask[3:6, 9:17, 8:15] = 1
    kidney = add_segment(reference, mask, volume, "kidney", (0.8, 0.3, 0.2))
    return scene, volume, reference, kidney, mask


def panel_for(module, worker, case, **fields):
    scene, volume, reference, kidney, _ = case
    panel = Panel(module, worker, scene, targetVolume=volume, referenceSegmentation=reference, **fields)
    panel.checked = [kidney]
    return panel


def test_apply_runs_in_the_process_writes_a_new_node_and_undo_removes_it(module, worker, case):
    scene, volume, reference, kidney, mask = case
    panel = panel_for(module, worker, case)
    assert panel.apply(panel.standins.copyEngine)
    assert panel.presenter.state().cancelEnabled and not panel.presenter.state().applyEnabled
    drive(panel.monitor)
    assert panel.view.status.startswith("Done: 1 segment(s) in 'ct KnowledgeSAM'"), panel.view.statuses
    output = panel.parameters.outputSegmentation
    written = mrml.labels_from_segmentation_node(output, None, volume)
    np.testing.assert_array_equal(written.layers[0] != 0, mask != 0)
    assert panel.presenter.state().undoEnabled
    assert panel.presenter.undo(confirm=lambda question: True)
    assert output.GetScene() is None and panel.parameters.outputSegmentation is None


def test_the_default_settings_work_on_the_one_click_sample(module, worker):
    """Every labelled reference slice by default (the sample has one): no slice view is needed."""
    scene = mrml.headless_scene()
    volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "KidneyPhantom1")
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(SAMPLE / "KidneyPhantom1.nrrd"))
    assert storage.ReadData(volume)
    reference = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "KidneyPhantom1-slice")
    segmentationStorage = slicer.vtkMRMLSegmentationStorageNode()
    segmentationStorage.SetFileName(str(SAMPLE / "KidneyPhantom1-slice.seg.nrrd"))
    assert segmentationStorage.ReadData(reference)
    panel = Panel(module, worker, scene, targetVolume=volume, referenceSegmentation=reference)
    segmentation = reference.GetSegmentation()
    panel.checked = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
    assert panel.parameters.referenceSliceMode == "all labelled slices"
    prepared = panel.presenter.prepare("cpu")
    assert prepared.request.reference_slices is None and prepared.request.roi == "auto"
    assert panel.apply(panel.standins.copyEngine)
    drive(panel.monitor)
    assert panel.view.status.startswith("Done: 3 segment(s)"), panel.view.statuses


def test_cancel_leaves_the_scene_as_it_was(module, worker, case):
    scene = case[0]
    panel = panel_for(module, worker, case)
    before = scene_state(scene)
    assert panel.apply(panel.standins.untilCancelled)
    drive(panel.monitor, until=lambda: panel.monitor.job.progress() == (1, 10))
    panel.presenter.cancel()
    drive(panel.monitor)
    assert panel.view.status.startswith("Cancelled after") and scene_state(scene) == before


def test_closing_the_scene_during_a_run_cancels_it_and_writes_nothing(module, worker, case):
    scene = case[0]
    panel = panel_for(module, worker, case)
    assert panel.apply(panel.standins.untilCancelled)
    drive(panel.monitor, until=lambda: panel.monitor.job.progress() == (1, 10))
    scene.Clear(0)  # Slicer's File > Close scene
    assert panel.monitor.job.cancelled
    drive(panel.monitor)
    assert "scene was closed" in panel.view.status
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0


def test_leaving_the_module_during_a_run_writes_nothing_even_if_the_result_arrives(module, worker, case):
    scene = case[0]
    panel = panel_for(module, worker, case)
    before = scene_state(scene)
    assert panel.apply(panel.standins.copyEngine)  # finishes on its own, before the cancel can stop it
    panel.presenter.onModuleExit()
    drive(panel.monitor)
    assert "left the module" in panel.view.status and scene_state(scene) == before


def test_a_crashed_process_is_a_clear_error_with_details_and_changes_nothing(module, worker, case):
    scene = case[0]
    panel = panel_for(module, worker, case)
    before = scene_state(scene)
    assert panel.apply(panel.standins.crashEngine)
    drive(panel.monitor)
    message, details = panel.view.errors[-1]
    assert "stopped unexpectedly" in message and "nothing was changed" in message and details is not None
    assert scene_state(scene) == before
    assert panel.apply(panel.standins.copyEngine)  # the next run starts a new process
    drive(panel.monitor)
    assert panel.view.status.startswith("Done:")


@pytest.mark.parametrize("problem", ["output is the reference", "ROI misses the target", "no such segment"])
def test_bad_input_is_refused_before_any_compute(module, worker, case, problem):
    scene, volume, reference, kidney, _ = case
    panel = panel_for(module, worker, case)
    if problem == "output is the reference":
        panel.parameters.outputSegmentation = reference
    elif problem == "ROI misses the target":
        roi = scene.AddNewNodeByClass("vtkMRMLMarkupsROINode", "far")
        roi.SetXYZ(900, 900, 900)
        roi.SetRadiusXYZ(5, 5, 5)
        panel.parameters.roiNode = roi
    else:
        panel.checked = ["no such segment"]
    before = scene_state(scene)
    starts = worker.starts
    assert not panel.apply(panel.standins.copyEngine)
    assert not panel.monitor.busy and worker.starts == starts
    assert panel.view.errors and panel.view.statuses[-1][1] is True
    assert scene_state(scene) == before


def test_which_controls_are_enabled(module, worker, case):
    scene, volume, reference, kidney, _ = case
    panel = panel_for(module, worker, case)
    state = panel.presenter.state()
    assert state.applyEnabled and state.inputsEnabled and not state.cancelEnabled and not state.undoEnabled
    assert state.referenceSliceEnabled and not state.referenceSliceNumberEnabled
    panel.parameters.referenceSliceMode = "slice number"
    assert panel.presenter.state().referenceSliceNumberEnabled
    panel.parameters.referenceVolume = add_volume(scene, np.zeros((8, 28, 28), np.int16), None, "atlas")
    assert not panel.presenter.state().referenceSliceEnabled  # another volume: its labels are all used
    panel.checked = []
    assert not panel.presenter.state().applyEnabled
    assert not panel.presenter.state("needs Slicer 5.10").applyEnabled
    assert panel.presenter.state("needs Slicer 5.10").applyToolTip == "needs Slicer 5.10"
