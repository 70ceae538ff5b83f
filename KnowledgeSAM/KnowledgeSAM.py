"""KnowledgeSAM: segment a volume by showing an example (a reference image and its segmentation).

Module (title, help), parameter node, panel (widget), Logic (GUI-free; also the console/batch API) and
self-test, following Slicer's scripted-module template. The widget only wires Qt to the panel's Qt-free
presenter (``KnowledgeSAMSlicer.panel``); all MRML work goes through ``KnowledgeSAMLib.mrml`` (Qt-free,
tested on slicer-core); inference runs in a separate process that keeps the model loaded
(``KnowledgeSAMSlicer.worker``), so Slicer's main thread can never starve it, and every MRML/Qt update happens
on the main thread. Nothing here imports torch until a run starts or the device list is opened.

This file must stay importable by Slicer 5.8 (Python 3.9): no ``X | Y`` annotations, and
``KnowledgeSAMLib`` (Python >= 3.10) is imported only inside functions.
"""

import logging
import os
from typing import Annotated

import qt
import vtk

import slicer
from slicer import vtkMRMLMarkupsROINode, vtkMRMLScalarVolumeNode, vtkMRMLSegmentationNode
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
from KnowledgeSAMSlicer.panel import REFERENCE_SLICE_MODES, SLICE_ALL
from KnowledgeSAMSlicer.selftest import ModuleTestCases, runTests

environment.ensureLibraryImportable(__file__)
choices = environment.libraryChoices()  # modes and axes: one definition, KnowledgeSAMLib/choices.py

HOMEPAGE = "https://github.com/KnowledgeSAM/SlicerKnowledgeSAM"
SETTINGS_MODEL_PATH = "KnowledgeSAM/ModelPath"  # the model folder field
SETTINGS_MODEL = "KnowledgeSAM/Model"  # the model combo: "" (default), a user model's folder, or "<folder>"
SETTINGS_SAM_CHECKPOINT = "KnowledgeSAM/SamCheckpointPath"
SETTINGS_DEVICE = "KnowledgeSAM/Device"


#
# KnowledgeSAM
#


class KnowledgeSAM(ScriptedLoadableModule):
    def __init__(self, parent):
        ScriptedLoadableModule.__init__(self, parent)
        self.parent.title = _("Knowledge SAM")
        self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]
        self.parent.dependencies = ["Segmentations", "Markups"]
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
    roiNode: an ROI box around the structures in the target; None means the engine's ``roi="auto"``.
    referenceSliceMode: "all labelled slices" by default (the one-click sample has one labelled slice).
    absentSlices: JSON {segment name: [slices]} marked "structure absent" in the target (the annotation loop).
    """

    targetVolume: vtkMRMLScalarVolumeNode
    referenceVolume: vtkMRMLScalarVolumeNode
    referenceSegmentation: vtkMRMLSegmentationNode
    referenceSegmentIds: str = "[]"
    outputSegmentation: vtkMRMLSegmentationNode
    referenceSliceMode: Annotated[str, Choice(REFERENCE_SLICE_MODES)] = SLICE_ALL
    referenceSliceIndex: Annotated[int, Minimum(0)] = 0
    axis: Annotated[str, Choice(list(choices.AXES))] = choices.DEFAULT_AXIS
    mode: Annotated[str, Choice(list(choices.MODES))] = choices.DEFAULT_MODE
    useSliceRange: bool = False
    sliceRangeStart: Annotated[int, Minimum(0)] = 0
    sliceRangeStop: Annotated[int, Minimum(0)] = 0
    roiNode: vtkMRMLMarkupsROINode
    absentSlices: str = "{}"


#
# KnowledgeSAMWidget
#


class KnowledgeSAMWidget(ScriptedLoadableModuleWidget, VTKObservationMixin):
    """The panel: Qt wiring only; what it does is ``KnowledgeSAMSlicer.panel.PanelPresenter`` (tested without
    Qt). Nothing is installed, downloaded, loaded or imported from torch in ``setup()``."""

    def __init__(self, parent=None):
        ScriptedLoadableModuleWidget.__init__(self, parent)
        VTKObservationMixin.__init__(self)
        self.logic = None
        self.presenter = None
        self.installer = None  # KnowledgeSAMSlicer.installer.InstallRun while dependencies install
        self._parameterNode = None
        self._parameterNodeGuiTag = None
        self._checklist = None  # KnowledgeSAMSlicer.segmentlist.SegmentChecklist
        self._monitor = None  # KnowledgeSAMSlicer.worker.JobMonitor: the running job, if any
        self._gpusListed = False

    def setup(self):
        ScriptedLoadableModuleWidget.setup(self)
        uiWidget = slicer.util.loadUI(self.resourcePath("UI/KnowledgeSAM.ui"))
        self.layout.addWidget(uiWidget)
        self.ui = slicer.util.childWidgetVariables(uiWidget)
        uiWidget.setMRMLScene(slicer.mrmlScene)
        self.logic = KnowledgeSAMLogic()
        self._setupPaths()
        self.ui.progressBar.setVisible(False)

        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.StartCloseEvent, self.onSceneStartClose)
        self.addObserver(slicer.mrmlScene, slicer.mrmlScene.EndCloseEvent, self.onSceneEndClose)
        self.ui.applyButton.connect("clicked(bool)", self.onApplyButton)
        self.ui.cancelButton.connect("clicked(bool)", self.onCancelButton)
        self.ui.undoButton.connect("clicked(bool)", self.onUndoButton)
        self.ui.installDependenciesButton.connect("clicked(bool)", self.onInstallDependencies)
        self.ui.refreshDevicesButton.connect("clicked(bool)", self.listGpusAndModels)
        self.ui.modelComboBox.connect("currentIndexChanged(int)", self.onModelChoiceChanged)
        self.ui.modelCollapsibleButton.connect("contentsCollapsed(bool)", self.onModelSectionCollapsed)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.samCheckpointPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)
        self.ui.updateButton.connect("clicked(bool)", self.onUpdateButton)
        self.ui.absentButton.connect("clicked(bool)", self.onAbsentButton)
        self.ui.clearAbsentButton.connect("clicked(bool)", self.onClearAbsentButton)
        self.ui.nextSliceButton.connect("clicked(bool)", self.onNextSliceButton)
        self.ui.confidenceListWidget.connect("itemClicked(QListWidgetItem*)", self.onConfidenceRowClicked)
        self.ui.loopCollapsibleButton.connect("contentsCollapsed(bool)", lambda collapsed: self.updateGUIState())

        from KnowledgeSAMSlicer import devices, panel, segmentlist, views, worker

        self._checklist = segmentlist.SegmentChecklist(self.ui.segmentsListWidget, lambda: self._parameterNode,
                                                       self.updateGUIState)
        self._monitor = worker.JobMonitor(self.ui.progressBar, self._onJobFinished)
        self.presenter = panel.PanelPresenter(self.logic, self._monitor, self, lambda: self._parameterNode,
                                              self._checkedSegmentIds, views.currentSliceIndex,
                                              views.segmentEditorUndoHook, views.jumpToSlice)
        self._fillDevices(devices.defaultDevices(slicer.util.settingsValue(SETTINGS_DEVICE, "auto")))
        self._fillModels()  # the user's model folders are listed when 'Model and device' opens (torch)
        self.initializeParameterNode()
        self.updateDependencyStatus()
        reason = environment.libraryUnavailableReason()
        if reason:
            self.setStatus(reason, error=True)

    def _setupPaths(self):
        import ctk

        self.ui.modelPathLineEdit.filters = ctk.ctkPathLineEdit.Dirs
        self.ui.samCheckpointPathLineEdit.filters = ctk.ctkPathLineEdit.Files
        self.ui.samCheckpointPathLineEdit.nameFilters = ["SAM checkpoint (*.pth)"]
        self.ui.modelPathLineEdit.currentPath = slicer.util.settingsValue(SETTINGS_MODEL_PATH, "")
        self.ui.samCheckpointPathLineEdit.currentPath = slicer.util.settingsValue(SETTINGS_SAM_CHECKPOINT, "")

    def cleanup(self):
        """The panel goes away (Slicer exits, or the module is reloaded): a running job is cancelled."""
        if self._monitor is not None:
            self._monitor.stop()
        if self.installer is not None:
            self.installer.cancel()
        if self._checklist is not None:
            self._checklist.cleanup()
        self.removeObservers()

    def enter(self):
        self.initializeParameterNode()

    def exit(self):
        """Leaving the module cancels a running segmentation (nothing is written) and disconnects the GUI."""
        if self.presenter is not None:
            self.presenter.onModuleExit()
        if self._parameterNode:
            self._parameterNode.disconnectGui(self._parameterNodeGuiTag)
            self._parameterNodeGuiTag = None
            self.removeObserver(self._parameterNode, vtk.vtkCommand.ModifiedEvent, self.updateGUIState)

    def onSceneStartClose(self, caller, event):
        self.presenter.onSceneStartClose()
        self.setParameterNode(None)
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

    @staticmethod
    def _fillCombo(combo, options, current):
        """Replace a combo's items (label, value, tooltip) without emitting change signals; select ``current``."""
        wasBlocked = combo.blockSignals(True)
        combo.clear()
        for index, choice in enumerate(options):
            combo.addItem(choice.label, choice.value)
            combo.setItemData(index, choice.tooltip, qt.Qt.ToolTipRole)
        combo.setCurrentIndex(current(options) or 0)
        combo.blockSignals(wasBlocked)

    def _fillDevices(self, options):
        saved = slicer.util.settingsValue(SETTINGS_DEVICE, "auto")
        self._fillCombo(self.ui.deviceComboBox, options,
                        lambda options: next((i for i, choice in enumerate(options) if choice.value == saved), 0))

    def onModelSectionCollapsed(self, collapsed):
        if not collapsed and not self._gpusListed:
            self.listGpusAndModels()

    def listGpusAndModels(self):
        self.listGpus()
        self.listUserModels()

    def _savedModelChoice(self):
        from KnowledgeSAMSlicer import models

        saved = slicer.util.settingsValue(SETTINGS_MODEL, None)
        if saved is None:  # settings of an older version: only the folder field existed
            return models.FOLDER_VALUE if self.ui.modelPathLineEdit.currentPath.strip() else models.DEFAULT_MODEL_VALUE
        return str(saved)

    def _fillModels(self, userModels=()):
        from KnowledgeSAMSlicer import models

        saved = self._savedModelChoice()
        self._fillCombo(self.ui.modelComboBox, models.modelChoices(userModels, remembered=saved),
                        lambda options: models.choiceIndex(options, saved))
        self._updateModelPathEnabled()

    def listUserModels(self):
        """The model folders in the user's model directory (imports torch: only when 'Model and device' opens)."""
        from KnowledgeSAMSlicer import models

        try:
            with slicer.util.WaitCursor():
                found = models.userModels()
        except Exception as error:  # a broken PyTorch or model folder must not break the panel
            logging.warning(f"KnowledgeSAM: could not list your models: {error}")
            found = []
        self._fillModels(found)

    def _updateModelPathEnabled(self):
        from KnowledgeSAMSlicer import models

        self.ui.modelPathLineEdit.enabled = self.ui.modelComboBox.currentData == models.FOLDER_VALUE

    def onModelChoiceChanged(self, index=None):
        qt.QSettings().setValue(SETTINGS_MODEL, self.ui.modelComboBox.currentData or "")
        self._updateModelPathEnabled()

    def listGpus(self):
        """The GPUs PyTorch sees, with their memory (imports torch: only when the user opens the device list)."""
        from KnowledgeSAMSlicer import devices

        try:
            with slicer.util.WaitCursor():
                choices = devices.availableDevices()
            self._gpusListed = True
        except Exception as error:  # a broken PyTorch must not break the panel
            logging.warning(f"KnowledgeSAM: could not list devices: {error}")
            choices = devices.defaultDevices()
        self._fillDevices(choices)

    def onDeviceChanged(self, index=None):
        qt.QSettings().setValue(SETTINGS_DEVICE, self.ui.deviceComboBox.currentData)

    def onModelPathChanged(self, path=None):
        qt.QSettings().setValue(SETTINGS_MODEL_PATH, self.ui.modelPathLineEdit.currentPath)
        qt.QSettings().setValue(SETTINGS_SAM_CHECKPOINT, self.ui.samCheckpointPathLineEdit.currentPath)

    def updateDependencyStatus(self):
        from KnowledgeSAMSlicer import installer

        missing = installer.missingDependencies(self.resourcePath("requirements.txt"))
        self.ui.dependenciesStatusLabel.text = _("all installed") if not missing else _("missing: {names}").format(
            names=", ".join(missing))
        self.ui.installDependenciesButton.enabled = bool(missing) and self.installer is None
        return not missing

    def onInstallDependencies(self):
        """One confirmation for everything (with the CPU/GPU choice), then the installers run as separate
        processes while Slicer stays responsive; their output is shown in the status line and the log."""
        from KnowledgeSAMSlicer import installer

        if self.installer is not None or self._busy():
            return
        run = installer.startInstall(self.resourcePath("requirements.txt"), self._installProgress,
                                     self._installFinished)
        self.installer = run if run is not None and run.outcome is None else None  # it may have ended at once
        self.updateDependencyStatus()
        self.updateGUIState()

    def _installProgress(self, line):
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setRange(0, 0)
        self.setStatus(line)

    def _installFinished(self, outcome):
        self.installer = None
        self.ui.progressBar.setVisible(False)
        self.setStatus(outcome.message, error=outcome.failed)
        if outcome.failed:
            slicer.util.errorDisplay(outcome.message, detailedText=outcome.details)
        self.updateDependencyStatus()
        from KnowledgeSAMSlicer import devices

        self._fillDevices(devices.defaultDevices(slicer.util.settingsValue(SETTINGS_DEVICE, "auto")))
        self.updateGUIState()

    def _modelArguments(self):
        from KnowledgeSAMSlicer import models

        modelPath = models.modelPath(self.ui.modelComboBox.currentData, self.ui.modelPathLineEdit.currentPath)
        samPath = self.ui.samCheckpointPathLineEdit.currentPath.strip() or None
        return modelPath, samPath

    # ---------------------------------------------------------------- the presenter's view

    def setStatus(self, text, error=False):
        self.ui.statusLabel.text = text
        self.ui.statusLabel.setStyleSheet("color: #c0392b;" if error else "")
        if text:
            logging.info(f"KnowledgeSAM: {text}")

    def showError(self, text, details=None):
        if details:
            slicer.util.errorDisplay(text, detailedText=details)
        else:
            slicer.util.errorDisplay(text)

    def refresh(self):
        self.updateGUIState()

    def _busy(self):
        return self.presenter is not None and self.presenter.busy

    def updateGUIState(self, caller=None, event=None):
        if self._checklist is not None:
            self._checklist.sync()
        if self.presenter is None:
            return
        state = self.presenter.state(environment.libraryUnavailableReason())
        installing = self.installer is not None
        self.ui.applyButton.enabled = state.applyEnabled and not installing
        self.ui.applyButton.toolTip = state.applyToolTip
        self.ui.cancelButton.enabled = state.cancelEnabled or installing
        self.ui.undoButton.enabled = state.undoEnabled
        self.ui.referenceSliceComboBox.enabled = state.referenceSliceEnabled
        self.ui.referenceSliceSpinBox.enabled = state.referenceSliceNumberEnabled
        self.ui.sliceRangeStartSpinBox.enabled = state.sliceRangeEnabled
        self.ui.sliceRangeStopSpinBox.enabled = state.sliceRangeEnabled
        for widget in (self.ui.inputsCollapsibleButton, self.ui.outputsCollapsibleButton,
                       self.ui.optionsCollapsibleButton, self.ui.modelCollapsibleButton):
            widget.enabled = state.inputsEnabled and not installing
        self.ui.updateButton.enabled = state.updateEnabled and not installing
        for button in (self.ui.absentButton, self.ui.nextSliceButton):
            button.enabled = state.loopEnabled and not installing
        self._showLoop()

    def _showLoop(self):
        """The absent marks and the output's per-slice confidence (read from tags: cheap)."""
        self.ui.absentSlicesLabel.text = self.presenter.absentText()
        rows = self.presenter.sliceRows() if not self.ui.loopCollapsibleButton.collapsed else []
        listWidget = self.ui.confidenceListWidget
        listWidget.clear()
        for index, text in rows:
            item = qt.QListWidgetItem(text)
            item.setData(qt.Qt.UserRole, index)
            listWidget.addItem(item)

    # ---------------------------------------------------------------- apply / cancel / undo

    def onApplyButton(self):
        if not self._readyToRun():
            return
        if not self.updateDependencyStatus():
            slicer.util.warningDisplay(_("Some dependencies are missing. Open 'Model and device' and press "
                                         "'Install dependencies' first."))
            self.ui.modelCollapsibleButton.collapsed = False
            return
        modelPath, samPath = self._modelArguments()
        self.presenter.apply(self.ui.deviceComboBox.currentData or choices.DEFAULT_DEVICE, modelPath, samPath)

    def _readyToRun(self):
        if self._busy():
            return False
        reason = environment.libraryUnavailableReason()
        if reason:
            slicer.util.errorDisplay(reason)
            return False
        return True

    def onUpdateButton(self):
        if self._readyToRun():
            modelPath, samPath = self._modelArguments()
            self.presenter.update(self.ui.deviceComboBox.currentData or choices.DEFAULT_DEVICE, modelPath, samPath)

    def onAbsentButton(self):
        self.presenter.markAbsent()

    def onClearAbsentButton(self):
        self.presenter.clearAbsent()

    def onNextSliceButton(self):
        self.presenter.nextSliceToCheck()

    def onConfidenceRowClicked(self, item):
        self.presenter.showSlice(int(item.data(qt.Qt.UserRole)))

    def onCancelButton(self):
        if self.installer is not None:
            self.installer.cancel()
        self.presenter.cancel()

    def _onJobFinished(self, job):
        self.presenter.onJobFinished(job)

    def onUndoButton(self):
        with slicer.util.tryWithErrorDisplay(_("Undo failed."), waitCursor=True):
            self.presenter.undo(slicer.util.confirmOkCancelDisplay)


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
                mode=choices.DEFAULT_MODE, device=choices.DEFAULT_DEVICE, sliceRange=None, roiNode=None,
                **requestOptions):
        """Read the nodes into a checked engine request (main thread); raises InputError on bad input, before
        any compute (an output that may not be written into, an ROI that misses the target, ...).
        ``requestOptions`` go to ``SegmentRequest`` unchanged (e.g. ``options=EngineOptions(...)``)."""
        from KnowledgeSAMLib import mrml

        return mrml.prepare_inputs(targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                                   outputSegmentationNode, referenceSliceIndex, axis=axis, mode=mode, device=device,
                                   slice_range=sliceRange, roi_node=roiNode, **requestOptions)

    def runPrepared(self, prepared, model=None, samCheckpoint=None, progressCallback=None, cancel=None, engine=None):
        """Run the engine on a prepared request in this process; touches no MRML node. (The panel and the
        effect run it in the inference process instead: ``KnowledgeSAMSlicer.worker.JobMonitor``.)"""
        from KnowledgeSAMLib import mrml

        return mrml.run_engine(prepared, self.segmenter(model, samCheckpoint, engine), progressCallback, cancel)

    def writePrepared(self, prepared, result, saveStateForUndo=None, afterWrite=None):
        """Write a result into the scene (main thread), all or nothing; returns a WriteBack (``.undo()``).
        ``afterWrite(node, segmentIds)`` runs as part of the write (the annotator's loop's record)."""
        from KnowledgeSAMLib import mrml

        return mrml.write_outputs(prepared, result, save_state_for_undo=saveStateForUndo, after_write=afterWrite)

    def segment(self, targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                outputSegmentationNode=None, referenceSliceIndex=None, axis=choices.DEFAULT_AXIS,
                mode=choices.DEFAULT_MODE, device=choices.DEFAULT_DEVICE, progressCallback=None, cancel=None,
                sliceRange=None, model=None, samCheckpoint=None, engine=None, roiNode=None, **requestOptions):
        """Segment the target with the knowledge prompt; returns the output vtkMRMLSegmentationNode.

        Runs in this process, on the calling thread (console, batch script); the panel and the effect use
        the inference process instead.

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
        :param roiNode: a ``vtkMRMLMarkupsROINode`` around the structures (None: found from the reference).
        :param requestOptions: further ``SegmentRequest`` fields, passed through.

        A run that fails or is cancelled leaves the scene exactly as it was.
        """
        from KnowledgeSAMLib import mrml

        return mrml.segment_volume_nodes(
            targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds, outputSegmentationNode,
            referenceSliceIndex, axis, mode, device, progressCallback, cancel, sliceRange=sliceRange,
            segmenter=self.segmenter(model, samCheckpoint, engine), roiNode=roiNode, **requestOptions)


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
