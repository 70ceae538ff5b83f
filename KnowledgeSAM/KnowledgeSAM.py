"""KnowledgeSAM: segment a volume by showing an example (a reference image and its segmentation).

Module (title, help), parameter node, panel (widget), Logic (GUI-free; also the console/batch API) and
self-test, following Slicer's scripted-module template. All MRML work goes through
``KnowledgeSAMLib.mrml`` (Qt-free, tested on slicer-core); inference runs on one persistent worker thread
(``KnowledgeSAMSlicer.worker``) and every MRML/Qt update happens on the main thread.

This file must stay importable by Slicer 5.8 (Python 3.9): no ``X | Y`` annotations, and
``KnowledgeSAMLib`` (Python >= 3.10) is imported only inside functions.
"""

import logging
import os
import traceback
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
from slicer.i18n import tr as _
from slicer.i18n import translate
from slicer.parameterNodeWrapper import Choice, Minimum, parameterNodeWrapper
from slicer.ScriptedLoadableModule import (
    ScriptedLoadableModule,
    ScriptedLoadableModuleLogic,
    ScriptedLoadableModuleTest,
    ScriptedLoadableModuleWidget,
)
from slicer.util import VTKObservationMixin

from KnowledgeSAMSlicer import environment
from KnowledgeSAMSlicer.selftest import ModuleTestCases, runTests

environment.ensureLibraryImportable(__file__)
choices = environment.libraryChoices()  # modes and axes: one definition, KnowledgeSAMLib/choices.py

HOMEPAGE = "https://github.com/KnowledgeSAM/SlicerKnowledgeSAM"
SLICE_CURRENT, SLICE_ALL, SLICE_NUMBER = "current slice in view", "all labelled slices", "slice number"
REFERENCE_SLICE_MODES = [SLICE_CURRENT, SLICE_ALL, SLICE_NUMBER]
SETTINGS_MODEL_PATH = "KnowledgeSAM/ModelPath"
SETTINGS_SAM_CHECKPOINT = "KnowledgeSAM/SamCheckpointPath"
SETTINGS_DEVICE = "KnowledgeSAM/Device"


def _sameNode(a, b):
    """The same MRML node (compared by ID: Python wrappers of one node are not always the same object)."""
    return a is not None and b is not None and a.GetID() == b.GetID()


#
# KnowledgeSAM
#


class KnowledgeSAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Knowledge SAM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations"]
        self.parent.contributors = ["KnowledgeSAM developers"]
        self.parent.helpText = _(
            "Segment structures in a volume by example: pick a reference volume and a segmentation of the "
            "structures you mean (the <i>knowledge prompt</i>), and KnowledgeSAM finds them in the target, slice "
            "by slice. The reference can be another patient, or the target itself with a few labelled slices. "
            "Results are marked <i>in progress</i>: review them before use. Not for clinical use. "
            'See the <a href="{homepage}">documentation</a>.').format(homepage=HOMEPAGE)
        self.parent.acknowledgementText = _(
            "KnowledgeSAM implements the knowledge-prompted SAM of Zhang et al., 'Knowledge Bridges the Intent Gap: "
            "Contextual Fusion in Medical Fine-Grained Segmentation' (MICCAI 2025), on Meta's Segment Anything "
            "(Apache-2.0). The embedded model's weights are distributed under their own licence (see the extension "
            "description).")
        slicer.app.connect("startupCompleted()", registerSampleData)


def registerSampleData():
    """Register the phantom CT and its reference segmentation with the Sample Data module."""
    from KnowledgeSAMSlicer import sampledata

    moduleDir = os.path.dirname(__file__)
    try:
        sampledata.register(os.path.join(moduleDir, "Resources", "SampleData"),
                            os.path.join(moduleDir, "Resources", "Icons"))
    except Exception as error:  # never break Slicer's start-up because of sample data
        logging.warning(f"KnowledgeSAM sample data were not registered: {error}")


#
# KnowledgeSAMParameterNode
#


@parameterNodeWrapper
class KnowledgeSAMParameterNode:
    """What the panel shows, saved with the scene.

    referenceVolume: None means "the target itself" (same-volume modes).
    referenceSegmentIds: JSON list of the checked segment IDs of referenceSegmentation.
    outputSegmentation: None means "create a new segmentation on Apply".
    """

    targetVolume: vtkMRMLScalarVolumeNode
    referenceVolume: vtkMRMLScalarVolumeNode
    referenceSegmentation: vtkMRMLSegmentationNode
    referenceSegmentIds: str = "[]"
    outputSegmentation: vtkMRMLSegmentationNode
    referenceSliceMode: Annotated[str, Choice(REFERENCE_SLICE_MODES)] = SLICE_CURRENT
    referenceSliceIndex: Annotated[int, Minimum(0)] = 0
    axis: Annotated[str, Choice(list(choices.AXES))] = choices.DEFAULT_AXIS
    mode: Annotated[str, Choice(list(choices.MODES))] = choices.DEFAULT_MODE
    useSliceRange: bool = False
    sliceRangeStart: Annotated[int, Minimum(0)] = 0
    sliceRangeStop: Annotated[int, Minimum(0)] = 0


#
# KnowledgeSAMWidget
#


class KnowledgeSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel. Nothing is installed, downloaded or loaded in ``setup()``."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._checklist = None  # KnowledgeSAMSlicer.segmentlist.SegmentChecklist
        self._monitor = None  # KnowledgeSAMSlicer.worker.JobMonitor: the running job, if any
        self._prepared = None
        self._lastWrite = None

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KnowledgeSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = KnowledgeSAMLogic()

        import ctk

        self.ui.modelPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.samCheckpointPathLineEdit.filters = ctk.ctkPathLineEdit.Files
        self.ui.samCheckpointPathLineEdit.nameFilters = ["SAM checkpoint (*.pth)"]
        self.ui.modelPathLineEdit.currentPath = slicer.util.settingsValue(SETTINGS_MODEL_PATH, "")
        self.ui.samCheckpointPathLineEdit.currentPath = slicer.util.settingsValue(SETTINGS_SAM_CHECKPOINT, "")
        self.ui.progressBar.setVisible(False)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)

        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.undoButton.connect("clicked(bool)", self.onUndoButton)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.refreshDevicesButton.connect("clicked(bool)", self.updateDevices)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.samCheckpointPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)

        from KnowledgeSAMSlicer import segmentlist, worker

        self._checklist = segmentlist.SegmentChecklist(self.ui.segmentsListWidget, lambda: self._parameterNode,
                                                       self.updateGUIState)
        self._monitor = worker.JobMonitor(self.ui.progressBar, self.onJobFinished)
        self.initializeParameterNode()
        self.updateDevices()
        self.updateDependencyStatus()
        reason = environment.libraryUnavailableReason()
        if reason:
            self.setStatus(reason, error=True)

    def cleanup(self):
        if self._monitor is not None:
            self._monitor.stop()
        if self._checklist is not None:
            self._checklist.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIState)

    def onSceneStartClose(self, caller, event):
        self.setParameterNode(None)
        self._lastWrite = None
        self._checklist.forget()

    def onSceneEndClose(self, caller, event):
        if self.parent.isEntered:
            self.initializeParameterNode()

    # ---------------------------------------------------------------- parameter node

    def initializeParameterNode(self):
        self.setParameterNode(self.logic.getParameterNode())
        if not self._parameterNode.targetVolume:
            firstVolume = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLScalarVolumeNode")
            if firstVolume:
                self._parameterNode.targetVolume = firstVolume
        if not self._parameterNode.referenceSegmentation:
            firstSegmentation = slicer.mrmlScene.GetFirstNodeByClass("vtkMRMLSegmentationNode")
            if firstSegmentation:
                self._parameterNode.referenceSegmentation = firstSegmentation

    def setParameterNode(self, inputParameterNode):
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIState)
        self._parameterNode = inputParameterNode
        if self._parameterNode:
            self._parameterNodeGuiTag = self._parameterNode.connectGui(self.ui)
            self.addObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIState)
        self.updateGUIState()

    def _checkedSegmentIds(self):
        return self._checklist.checkedIds() if self._checklist is not None else []

    # ---------------------------------------------------------------- devices, dependencies, model

    def updateDevices(self):
        from KnowledgeSAMSlicer import devices

        saved = slicer.util.settingsValue(SETTINGS_DEVICE, "auto")
        combo = self.ui.deviceComboBox
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        try:
            choices = devices.availableDevices()
        except Exception as error:  # a broken PyTorch must not break the panel
            logging.warning(f"KnowledgeSAM: could not list devices: {error}")
            choices = [devices.DeviceChoice("CPU", "cpu")]
        for index, choice in enumerate(choices):
            combo.addItem(choice.label, choice.value)
            combo.setItemData(index, choice.tooltip, qt.Qt.ToolTipRole)
        found = combo.findData(saved)
        combo.setCurrentIndex(found if found >= 0 else 0)
        combo.blockSignals(wasBlocked)

    def onDeviceChanged(self, index=None):
        qt.QSettings().setValue(SETTINGS_DEVICE, self.ui.deviceComboBox.currentData)

    def onModelPathChanged(self, path=None):
        qt.QSettings().setValue(SETTINGS_MODEL_PATH, self.ui.modelPathLineEdit.currentPath)
        qt.QSettings().setValue(SETTINGS_SAM_CHECKPOINT, self.ui.samCheckpointPathLineEdit.currentPath)

    def updateDependencyStatus(self):
        from KnowledgeSAMSlicer import dependencies

        missing = dependencies.missingRequirements(dependencies.readRequirements(self.resourcePath("requirements.txt")))
        if dependencies.torchMissing():
            missing = ["torch (PyTorch extension)"] + missing
        self.ui.dependenciesStatusLabel.text = _("all installed") if not missing else _("missing: {names}").format(
            names=", ".join(missing))
        self.ui.installDependenciesButton.enabled = bool(missing)
        return not missing

    def onInstallDependencies(self):
        from KnowledgeSAMSlicer import dependencies

        try:
            with slicer.util.tryWithErrorDisplay(_("Installing KnowledgeSAM's dependencies failed."), waitCursor=True):
                dependencies.installDependencies(self.resourcePath("requirements.txt"))
                self.setStatus(_("Dependencies installed."))
        except (dependencies.InstallAborted, dependencies.RestartRequired) as error:
            self.setStatus(str(error), error=True)
        self.updateDependencyStatus()
        self.updateDevices()
        self.updateGUIState()

    def _modelArguments(self):
        modelPath = self.ui.modelPathLineEdit.currentPath.strip() or None
        samPath = self.ui.samCheckpointPathLineEdit.currentPath.strip() or None
        return modelPath, samPath

    # ---------------------------------------------------------------- state

    def setStatus(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")
        if text:
            logging.info(f"KnowledgeSAM: {text}")

    def _busy(self):
        return self._monitor is not None and self._monitor.busy

    def updateGUIState(self, caller=None, event=None):
        if self._checklist is not None:
            self._checklist.sync()
        p = self._parameterNode
        busy = self._busy()
        available = environment.libraryUnavailableReason() is None
        ready = bool(p and p.targetVolume and p.referenceSegmentation and self._checkedSegmentIds())
        self.ui.applyButton.enabled = available and ready and not busy
        if not available:
            self.ui.applyButton.toolTip = environment.libraryUnavailableReason()
        elif not ready:
            self.ui.applyButton.toolTip = _("Choose a target volume, a reference segmentation and at least one segment.")
        else:
            self.ui.applyButton.toolTip = _("Segment the target volume.")
        self.ui.cancelButton.enabled = busy
        self.ui.undoButton.enabled = (not busy) and self._lastWrite is not None and not self._lastWrite.undone
        sameVolume = bool(p) and (p.referenceVolume is None or _sameNode(p.referenceVolume, p.targetVolume))
        self.ui.referenceSliceComboBox.enabled = sameVolume and not busy
        self.ui.referenceSliceSpinBox.enabled = sameVolume and not busy and bool(p) and p.referenceSliceMode == SLICE_NUMBER
        useRange = bool(p) and p.useSliceRange
        self.ui.sliceRangeStartSpinBox.enabled = useRange and not busy
        self.ui.sliceRangeStopSpinBox.enabled = useRange and not busy
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                       self.ui.optionsCollapsibleButton, self.ui.modelCollapsibleButton):
            widget.enabled = not busy

    # ---------------------------------------------------------------- apply / cancel / undo

    def _referenceSliceIndex(self, p, referenceVolume):
        sameVolume = _sameNode(referenceVolume, p.targetVolume)
        if not sameVolume or p.referenceSliceMode == SLICE_ALL:
            return None
        if p.referenceSliceMode == SLICE_NUMBER:
            return int(p.referenceSliceIndex)
        from KnowledgeSAMSlicer import views

        return views.currentSliceIndex(referenceVolume, p.axis)

    def onApplyButton(self):
        if self._busy():
            return
        reason = environment.libraryUnavailableReason()
        if reason:
            slicer.util.errorDisplay(reason)
            return
        if not self.updateDependencyStatus():
            slicer.util.warningDisplay(_("Some dependencies are missing. Open 'Model and device' and press "
                                         "'Install dependencies' first."))
            self.ui.modelCollapsibleButton.collapsed = False
            return
        from KnowledgeSAMLib.errors import KnowledgeSAMError

        p = self._parameterNode
        referenceVolume = p.referenceVolume or p.targetVolume
        try:
            sliceIndex = self._referenceSliceIndex(p, referenceVolume)
            sliceRange = (int(p.sliceRangeStart), int(p.sliceRangeStop)) if p.useSliceRange else None
            self._prepared = self.logic.prepare(
                p.targetVolume, referenceVolume, p.referenceSegmentation, self._checkedSegmentIds(),
                outputSegmentationNode=p.outputSegmentation, referenceSliceIndex=sliceIndex, axis=p.axis,
                mode=p.mode, device=self.ui.deviceComboBox.currentData or choices.DEFAULT_DEVICE, sliceRange=sliceRange)
        except (KnowledgeSAMError, ValueError) as error:
            self.setStatus(str(error), error=True)
            slicer.util.errorDisplay(str(error))
            return
        modelPath, samPath = self._modelArguments()
        logic, prepared = self.logic, self._prepared

        def work(progress, cancel):
            return logic.runPrepared(prepared, model=modelPath, samCheckpoint=samPath, progressCallback=progress,
                                     cancel=cancel)

        self._monitor.start(work)
        self.setStatus(_("Segmenting {target}...").format(target=p.targetVolume.GetName()))
        self.updateGUIState()

    def onCancelButton(self):
        if self._busy():
            self._monitor.cancel()
            self.setStatus(_("Cancelling after the current batch..."))

    def onJobFinished(self, job):
        try:
            self._finishJob(job)
        finally:
            self._prepared = None
            self.updateGUIState()

    def _finishJob(self, job):
        from KnowledgeSAMLib.errors import CancelledError, KnowledgeSAMError

        try:
            result = job.result()
            write = self.logic.writePrepared(self._prepared, result,
                                             saveStateForUndo=self._segmentEditorUndoHook(self._prepared))
        except CancelledError:
            self.setStatus(_("Cancelled after {seconds:.1f} s; nothing was changed.").format(seconds=job.elapsedSeconds))
            return
        except KnowledgeSAMError as error:
            self.setStatus(str(error), error=True)
            slicer.util.errorDisplay(str(error))
            return
        except Exception as error:
            self.setStatus(_("Segmentation failed: {error}").format(error=error), error=True)
            slicer.util.errorDisplay(_("Segmentation failed: {error}").format(error=error),
                                     detailedText=traceback.format_exc())
            return
        self._lastWrite = write
        output = write.segmentation_node
        if self._parameterNode.outputSegmentation is None:
            self._parameterNode.outputSegmentation = output
        output.CreateDefaultDisplayNodes()
        provenance = result.provenance or {}
        self.setStatus(_("Done: {count} segment(s) in '{output}' in {seconds:.1f} s on {device}. The segments are "
                         "marked 'in progress': please review them.").format(
            count=len(write.segment_ids), output=output.GetName(), seconds=job.elapsedSeconds,
            device=provenance.get("device", "?")))

    @staticmethod
    def _segmentEditorUndoHook(prepared):
        """The Segment Editor's saveStateForUndo when it edits the output node (so Ctrl+Z undoes the run)."""
        output = prepared.output_segmentation_node if prepared is not None else None
        editorWidget = getattr(slicer.modules, "SegmentEditorWidget", None)
        editor = getattr(editorWidget, "editor", None)
        if output is None or editor is None:
            return None
        if not _sameNode(editor.segmentationNode(), output):
            return None
        return editor.saveStateForUndo

    def onUndoButton(self):
        if self._lastWrite is None:
            return
        if self._lastWrite.edited_since() and not slicer.util.confirmOkCancelDisplay(
                _("The output segmentation was edited after the run. Undoing the run also reverts those edits. "
                  "Continue?")):
            return
        with slicer.util.tryWithErrorDisplay(_("Undo failed."), waitCursor=True):
            created = self._lastWrite.created_node
            self._lastWrite.undo()
            if created and self._parameterNode:
                self._parameterNode.outputSegmentation = None
            self.setStatus(_("The last run was undone."))
        self.updateGUIState()


#
# KnowledgeSAMLogic
#


class KnowledgeSAMLogic(ScriptedLoadableModuleLogic):
    """GUI-free: usable from the Python console and ``Slicer --no-main-window --python-script``. It only
    passes nodes to ``KnowledgeSAMLib.mrml`` and keeps one ``Segmenter`` (the model, loaded once and shared
    with the Segment Editor effect, and the reference's encoding, reused for the next target).

    Console example::

        import KnowledgeSAM
        logic = KnowledgeSAM.KnowledgeSAMLogic()
        out = logic.segment(targetNode, referenceNode, referenceSegNode, ["kidney"], mode="volume")
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)
        self._segmenter = None

    def getParameterNode(self):
        return KnowledgeSAMParameterNode(super().getParameterNode())

    def segmenter(self, model=None, samCheckpoint=None, engine=None):
        """The Segmenter for ``model`` (None: the embedded default; a model folder; a config name; a loaded
        model) and ``samCheckpoint``; ``engine`` replaces the inference engine (test seam)."""
        from KnowledgeSAMLib import mrml

        if self._segmenter is None or self._segmenter.engine is not engine:
            self._segmenter = mrml.Segmenter(model, samCheckpoint, engine=engine, models=mrml.shared_models())
        else:
            self._segmenter.use_model(model, samCheckpoint)
        return self._segmenter

    def prepare(self, targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                outputSegmentationNode=None, referenceSliceIndex=None, axis=choices.DEFAULT_AXIS,
                mode=choices.DEFAULT_MODE, device=choices.DEFAULT_DEVICE, sliceRange=None, **requestOptions):
        """Read the nodes into a checked engine request (main thread); raises InputError on bad input.
        ``requestOptions`` go to ``SegmentRequest`` unchanged (e.g. ``options=EngineOptions(...)``)."""
        from KnowledgeSAMLib import mrml

        return mrml.prepare_inputs(targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                                   outputSegmentationNode, referenceSliceIndex, axis=axis, mode=mode, device=device,
                                   slice_range=sliceRange, **requestOptions)

    def runPrepared(self, prepared, model=None, samCheckpoint=None, progressCallback=None, cancel=None, engine=None):
        """Run the engine on a prepared request; touches no MRML node (safe on the worker thread)."""
        from KnowledgeSAMLib import mrml

        return mrml.run_engine(prepared, self.segmenter(model, samCheckpoint, engine), progressCallback, cancel)

    def writePrepared(self, prepared, result, saveStateForUndo=None):
        """Write a result into the scene (main thread), all or nothing; returns a WriteBack (``.undo()``)."""
        from KnowledgeSAMLib import mrml

        return mrml.write_outputs(prepared, result, save_state_for_undo=saveStateForUndo)

    def segment(self, targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                outputSegmentationNode=None, referenceSliceIndex=None, axis=choices.DEFAULT_AXIS,
                mode=choices.DEFAULT_MODE, device=choices.DEFAULT_DEVICE, progressCallback=None, cancel=None,
                sliceRange=None, model=None, samCheckpoint=None, engine=None, **requestOptions):
        """Segment the target with the knowledge prompt; returns the output vtkMRMLSegmentationNode.

        :param referenceVolumeNode: the image the reference segmentation was drawn on (may be the target).
        :param segmentIds: segment IDs or names of ``referenceSegmentationNode`` (empty: all).
        :param outputSegmentationNode: None creates a new node; in an existing node only the output
            segments (same names as the reference segments) are added or replaced.
        :param referenceSliceIndex: same-volume modes: the labelled slice(s) to use, along ``axis``.
        :param axis: ``axial``, ``sagittal`` or ``coronal``.
        :param mode: ``auto``, ``anchor``, ``propagate`` or ``volume``.
        :param device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        :param progressCallback: ``callback(done, total)``.
        :param cancel: a ``KnowledgeSAMLib.mrml.CancelToken``.
        :param sliceRange: ``(start, stop)`` target slices along ``axis``.
        :param model: None (embedded default), a model folder, or a loaded model.
        :param samCheckpoint: path of ``sam_vit_b_01ec64.pth`` for models that need it.
        :param engine: replaces the inference engine (test seam).
        :param requestOptions: further ``SegmentRequest`` fields, passed through.

        A run that fails or is cancelled leaves the scene exactly as it was.
        """
        from KnowledgeSAMLib import mrml

        return mrml.segment_volume_nodes(
            targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds, outputSegmentationNode,
            referenceSliceIndex, axis, mode, device, progressCallback, cancel, sliceRange=sliceRange,
            segmenter=self.segmenter(model, samCheckpoint, engine), **requestOptions)


#
# KnowledgeSAMTest
#


class KnowledgeSAMTest(ModuleTestCases, ScriptedLoadableModuleTest):
    """Runs inside Slicer: ``Slicer --testing --python-code "import slicer.testing;
    slicer.testing.runUnitTest(['<path>/KnowledgeSAM'], 'KnowledgeSAM')"`` or the Self Tests module. The
    tests are in ``KnowledgeSAMSlicer/selftest.py``."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        runTests(self, self.TESTS)
