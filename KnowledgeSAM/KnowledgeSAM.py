"""KnowledgeSAM: segment a volume by showing an example (a reference image and its segmentation).

Module (title, help), parameter node, panel (widget), Logic (GUI-free; also the console/batch API) and
self-test, following Slicer's scripted-module template. All MRML work goes through
``KnowledgeSAMLib.mrml`` (Qt-free, tested on slicer-core); inference runs on one persistent worker thread
(``KnowledgeSAMSlicer.worker``) and every MRML/Qt update happens on the main thread.

This file must stay importable by Slicer 5.8 (Python 3.9): no ``X | Y`` annotations, and
``KnowledgeSAMLib`` (Python >= 3.10) is imported only inside functions.
"""

import json
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

environment.ensureLibraryImportable(__file__)
choices = environment.libraryChoices()  # modes and axes: one definition, KnowledgeSAMLib/choices.py

HOMEPAGE = "https://github.com/KnowledgeSAM/SlicerKnowledgeSAM"
SLICE_CURRENT, SLICE_ALL, SLICE_NUMBER = "current slice in view", "all labelled slices", "slice number"
REFERENCE_SLICE_MODES = [SLICE_CURRENT, SLICE_ALL, SLICE_NUMBER]
SETTINGS_MODEL_PATH = "KnowledgeSAM/ModelPath"
SETTINGS_SAM_CHECKPOINT = "KnowledgeSAM/SamCheckpointPath"
SETTINGS_DEVICE = "KnowledgeSAM/Device"
POLL_INTERVAL_MS = 150


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
        self._observedSegmentation = None
        self._job = None
        self._prepared = None
        self._lastWrite = None
        self._pollTimer = None
        self._updatingSegmentList = False
        self._listedSegmentationId = None

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
        self.ui.segmentsListWidget.connect("itemChanged(QListWidgetItem*)", self.onSegmentCheckChanged)
        self.ui.modelPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.samCheckpointPathLineEdit.connect("currentPathChanged(QString)", self.onModelPathChanged)
        self.ui.deviceComboBox.connect("currentIndexChanged(int)", self.onDeviceChanged)

        self._pollTimer = qt.QTimer()
        self._pollTimer.setInterval(POLL_INTERVAL_MS)
        self._pollTimer.connect("timeout()", self.onPollJob)

        self.initializeParameterNode()
        self.updateDevices()
        self.updateDependencyStatus()
        reason = environment.libraryUnavailableReason()
        if reason:
            self.setStatus(reason, error=True)

    def cleanup(self):
        if self._job is not None:
            self._job.cancel()
        if self._pollTimer is not None:
            self._pollTimer.stop()
        self._observeSegmentation(None)
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
        self._listedSegmentationId = None

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

    # ---------------------------------------------------------------- segment checklist

    def _checkedSegmentIds(self):
        if not self._parameterNode:
            return []
        try:
            return list(json.loads(self._parameterNode.referenceSegmentIds or "[]"))
        except ValueError:
            return []

    _SEGMENT_EVENTS = ("SegmentAdded", "SegmentRemoved", "SegmentModified")

    def _observeSegmentation(self, segmentationNode):
        """Keep the checklist in step with the reference segmentation's segments."""
        events = [getattr(slicer.vtkSegmentation, name) for name in self._SEGMENT_EVENTS]
        if self._observedSegmentation is not None:
            for event in events:
                self.removeObserver(self._observedSegmentation, event, self.refreshSegmentList)
        self._observedSegmentation = segmentationNode
        if segmentationNode is not None:
            for event in events:
                self.addObserver(segmentationNode, event, self.refreshSegmentList)

    def _syncReferenceSegmentation(self):
        segmentationNode = self._parameterNode.referenceSegmentation if self._parameterNode else None
        if segmentationNode is not self._observedSegmentation:
            self._observeSegmentation(segmentationNode)
            self.refreshSegmentList()

    def refreshSegmentList(self, caller=None, event=None):
        """Rebuild the checklist from the reference segmentation. Checked: the saved IDs; for a newly
        chosen segmentation without saved IDs, all of its segments."""
        listWidget = self.ui.segmentsListWidget
        segmentationNode = self._parameterNode.referenceSegmentation if self._parameterNode else None
        checked = set(self._checkedSegmentIds())
        newNode = segmentationNode is not None and segmentationNode.GetID() != self._listedSegmentationId
        self._listedSegmentationId = segmentationNode.GetID() if segmentationNode is not None else None
        self._updatingSegmentList = True
        try:
            listWidget.clear()
            if segmentationNode is None:
                return
            segmentation = segmentationNode.GetSegmentation()
            ids = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())]
            if newNode and not checked.intersection(ids):
                checked = set(ids)
            for segmentId in ids:
                segment = segmentation.GetSegment(segmentId)
                item = qt.QListWidgetItem(segment.GetName())
                item.setData(qt.Qt.UserRole, segmentId)
                item.setFlags(item.flags() | qt.Qt.ItemIsUserCheckable)
                item.setCheckState(qt.Qt.Checked if segmentId in checked else qt.Qt.Unchecked)
                item.setIcon(self._colorIcon(segment.GetColor()))
                listWidget.addItem(item)
        finally:
            self._updatingSegmentList = False
        self._storeCheckedSegments()

    @staticmethod
    def _colorIcon(color):
        pixmap = qt.QPixmap(12, 12)
        pixmap.fill(qt.QColor.fromRgbF(color[0], color[1], color[2]))
        return qt.QIcon(pixmap)

    def onSegmentCheckChanged(self, item=None):
        if not self._updatingSegmentList:
            self._storeCheckedSegments()

    def _storeCheckedSegments(self):
        if not self._parameterNode:
            return
        listWidget = self.ui.segmentsListWidget
        ids = [listWidget.item(row).data(qt.Qt.UserRole) for row in range(listWidget.count)
               if listWidget.item(row).checkState() == qt.Qt.Checked]
        text = json.dumps(ids)
        if text != self._parameterNode.referenceSegmentIds:
            self._parameterNode.referenceSegmentIds = text
        self.updateGUIState()

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
        return self._job is not None

    def updateGUIState(self, caller=None, event=None):
        self._syncReferenceSegmentation()
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
                mode=p.mode, device=self.ui.deviceComboBox.currentData or "auto", sliceRange=sliceRange)
        except (KnowledgeSAMError, ValueError) as error:
            self.setStatus(str(error), error=True)
            slicer.util.errorDisplay(str(error))
            return
        modelPath, samPath = self._modelArguments()
        logic, prepared = self.logic, self._prepared
        from KnowledgeSAMSlicer import worker

        def work(progress, cancel):
            return logic.runPrepared(prepared, model=modelPath, samCheckpoint=samPath, progressCallback=progress,
                                     cancel=cancel)

        from KnowledgeSAMLib.infer.cancel import CancelToken

        self._job = worker.sharedWorker().submit(work, CancelToken())
        self.ui.progressBar.setVisible(True)
        self.ui.progressBar.setRange(0, 0)  # busy until the engine reports its total
        self.setStatus(_("Segmenting {target}...").format(target=p.targetVolume.GetName()))
        self.updateGUIState()
        self._pollTimer.start()

    def onCancelButton(self):
        if self._job is not None:
            self._job.cancel()
            self.setStatus(_("Cancelling after the current batch..."))

    def onPollJob(self):
        job = self._job
        if job is None:
            self._pollTimer.stop()
            return
        done, total = job.progress()
        if total > 0:
            self.ui.progressBar.setRange(0, total)
            self.ui.progressBar.setValue(done)
        if not job.done():
            return
        self._pollTimer.stop()
        self._job = None
        self.ui.progressBar.setVisible(False)
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
    """GUI-free: usable from the Python console and ``Slicer --no-main-window --python-script``.

    Console example::

        import KnowledgeSAM
        logic = KnowledgeSAM.KnowledgeSAMLogic()
        out = logic.segment(targetNode, referenceNode, referenceSegNode, ["kidney"], mode="volume")
    """

    def __init__(self):
        ScriptedLoadableModuleLogic.__init__(self)

    def getParameterNode(self):
        return KnowledgeSAMParameterNode(super().getParameterNode())

    @staticmethod
    def loadModel(model=None, samCheckpoint=None):
        """The KSAM for ``model`` (None: the embedded default; a folder; a config name for tests), cached."""
        if model is not None and not isinstance(model, (str, os.PathLike)):
            return model
        from KnowledgeSAMLib.model.registry import resolve_model
        from KnowledgeSAMSlicer.worker import sharedModelCache

        def loader(name, sam):
            return resolve_model(str(name), sam_checkpoint=sam)

        return sharedModelCache().get(str(model or "default"), samCheckpoint, loader)

    def prepare(self, targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                outputSegmentationNode=None, referenceSliceIndex=None, axis="axial", mode="auto", device="auto",
                sliceRange=None):
        """Read the nodes into an engine request (main thread); raises InputError on bad input."""
        from KnowledgeSAMLib import mrml

        return mrml.prepare_inputs(targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                                   outputSegmentationNode, referenceSliceIndex, axis, mode, device, sliceRange)

    def runPrepared(self, prepared, model=None, samCheckpoint=None, progressCallback=None, cancel=None, engine=None):
        """Run the engine on a prepared request; touches no MRML node (safe on the worker thread)."""
        from KnowledgeSAMLib import mrml

        if engine is None:
            model = self.loadModel(model, samCheckpoint)
        return mrml.run_engine(prepared, model=model, progress=progressCallback, cancel=cancel, engine=engine)

    def writePrepared(self, prepared, result, saveStateForUndo=None):
        """Write a result into the scene (main thread), all or nothing; returns a WriteBack (``.undo()``)."""
        from KnowledgeSAMLib import mrml

        return mrml.write_outputs(prepared, result, save_state_for_undo=saveStateForUndo)

    def segment(self, targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds,
                outputSegmentationNode=None, referenceSliceIndex=None, axis="axial", mode="auto", device="auto",
                progressCallback=None, cancel=None, sliceRange=None, model=None, samCheckpoint=None, engine=None):
        """Segment the target with the knowledge prompt; returns the output vtkMRMLSegmentationNode.

        :param referenceVolumeNode: the image the reference segmentation was drawn on (may be the target).
        :param segmentIds: segment IDs or names of ``referenceSegmentationNode`` (empty: all).
        :param outputSegmentationNode: None creates a new node; in an existing node only the output
            segments (same names as the reference segments) are added or replaced.
        :param referenceSliceIndex: same-volume modes: the labelled slice(s) to use, along ``axis``.
        :param axis: ``axial``, ``coronal`` or ``sagittal``.
        :param mode: ``auto``, ``anchor``, ``propagate`` or ``volume``.
        :param device: ``auto``, ``cpu``, ``cuda``, ``cuda:1``, ``mps``.
        :param progressCallback: ``callback(done, total)``.
        :param cancel: a ``KnowledgeSAMLib.infer.cancel.CancelToken``.
        :param sliceRange: ``(start, stop)`` target slices along ``axis``.
        :param model: None (embedded default), a model folder, or a loaded model.
        :param samCheckpoint: path of ``sam_vit_b_01ec64.pth`` for models that need it.
        :param engine: replaces the inference engine (test seam).

        A run that fails or is cancelled leaves the scene exactly as it was.
        """
        from KnowledgeSAMLib import mrml

        if engine is None:
            model = self.loadModel(model, samCheckpoint)
        return mrml.segment_volume_nodes(
            targetVolumeNode, referenceVolumeNode, referenceSegmentationNode, segmentIds, outputSegmentationNode,
            referenceSliceIndex, axis, mode, device, progressCallback, cancel, sliceRange=sliceRange, model=model,
            samCheckpoint=samCheckpoint, engine=engine)


#
# KnowledgeSAMTest
#


class KnowledgeSAMTest(ScriptedLoadableModuleTest):
    """Runs inside Slicer: ``Slicer --testing --python-code "import slicer.testing;
    slicer.testing.runUnitTest(['<path>/KnowledgeSAM'], 'KnowledgeSAM')"`` or the Self Tests module."""

    def setUp(self):
        slicer.mrmlScene.Clear()

    def runTest(self):
        reason = environment.libraryUnavailableReason()
        if reason:
            self.delayDisplay(f"Skipping KnowledgeSAM tests: {reason}")
            return
        self.setUp()
        self.test_conversions_match_slicer_util()
        self.setUp()
        self.test_logic_writes_only_its_segments()
        self.setUp()
        self.test_failed_run_leaves_scene_unchanged()
        self.setUp()
        self.test_widget_checklist_and_apply_state()
        self.setUp()
        self.test_sample_data_loads()
        self.setUp()
        self.test_real_engine_tiny_model()

    # helpers ---------------------------------------------------------------

    def _volume(self, array, name, ijkToRas=None):
        import numpy as np

        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        slicer.util.updateVolumeFromArray(node, array)
        if ijkToRas is not None:
            node.SetIJKToRASMatrix(slicer.util.vtkMatrixFromArray(np.asarray(ijkToRas, dtype=float)))
        return node

    def _segmentation(self, volume, masks, name="reference"):
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
        node.CreateDefaultDisplayNodes()
        node.SetReferenceImageGeometryParameterFromVolumeNode(volume)
        ids = {}
        for segmentName, (mask, color) in masks.items():
            ids[segmentName] = node.GetSegmentation().AddEmptySegment("", segmentName, color)
            slicer.util.updateSegmentBinaryLabelmapFromArray(mask, node, ids[segmentName], volume)
        return node, ids

    def _phantom(self):
        """A small tilted CT-like volume with two structures, and a second grid to resample onto."""
        import numpy as np

        rng = np.random.default_rng(1)
        array = rng.normal(0, 20, (16, 40, 40)).astype(np.int16)
        zz, yy, xx = np.mgrid[:16, :40, :40]
        kidney = ((zz - 8) ** 2 / 25 + (yy - 20) ** 2 / 100 + (xx - 14) ** 2 / 36) <= 1
        artery = (np.abs(yy - 20) <= 1) & (np.abs(xx - 26) <= 1)
        array[kidney] += 180
        array[artery] += 300
        matrix = np.array([[-0.9, 0.1, 0, 30], [-0.1, -0.9, 0, 20], [0, 0, 2.5, -10], [0, 0, 0, 1]])
        volume = self._volume(array, "phantom", matrix)
        return volume, {"kidney": (kidney.astype(np.uint8), [0.8, 0.3, 0.2]),
                        "artery": (artery.astype(np.uint8), [0.9, 0.1, 0.1])}

    @staticmethod
    def _copyEngine(request, model, progress, cancel):
        """Stand-in engine: reference labels resampled to the target (tests the Slicer plumbing only)."""
        import numpy as np

        from KnowledgeSAMLib.data.io import resample_labels_to
        from KnowledgeSAMLib.data.volume import Labels
        from KnowledgeSAMLib.infer.request import SegmentationResult

        onTarget = resample_labels_to(request.reference_labels, request.target.geometry, request.target.shape)
        layers = np.zeros_like(onTarget.layers)
        for index, segment in enumerate(request.segments):
            if cancel is not None:
                cancel.raise_if_cancelled()
            layers[segment.layer][onTarget.mask(segment)] = segment.label_value
            if progress is not None:
                progress(index + 1, len(request.segments))
        return SegmentationResult(Labels(layers, request.target.geometry, list(request.segments)), {},
                                  {"model": {"sha256": "copy-engine"}, "device": "cpu"})

    @staticmethod
    def _segmentState(segmentationNode, volumeNode):
        segmentation = segmentationNode.GetSegmentation()
        state = {}
        for index in range(segmentation.GetNumberOfSegments()):
            segmentId = segmentation.GetNthSegmentID(index)
            segment = segmentation.GetSegment(segmentId)
            voxels = slicer.util.arrayFromSegmentBinaryLabelmap(segmentationNode, segmentId, volumeNode)
            state[segmentId] = (index, segment.GetName(), tuple(segment.GetColor()), voxels.tobytes())
        return state

    # tests -----------------------------------------------------------------

    def test_conversions_match_slicer_util(self):
        """KnowledgeSAMLib.mrml's conversions agree with slicer.util's array helpers."""
        import numpy as np

        from KnowledgeSAMLib import mrml

        self.delayDisplay("Conversions against slicer.util")
        volume, masks = self._phantom()
        segmentation, ids = self._segmentation(volume, masks)
        image = mrml.image_from_volume_node(volume)
        np.testing.assert_array_equal(image.array, slicer.util.arrayFromVolume(volume))
        other = self._volume(np.zeros((20, 30, 30), np.int16), "other grid",
                             [[1.2, 0, 0, 0], [0, 1.2, 0, 0], [0, 0, 2.0, -5], [0, 0, 0, 1]])
        labels = mrml.labels_from_segmentation_node(segmentation, list(ids.values()), other)
        for name, segmentId in ids.items():
            expected = slicer.util.arrayFromSegmentBinaryLabelmap(segmentation, segmentId, other) != 0
            np.testing.assert_array_equal(labels.mask(labels.find(segmentId)), expected)
        self.delayDisplay("Conversions passed")

    def test_logic_writes_only_its_segments(self):
        import numpy as np

        self.delayDisplay("Logic write-back into an existing segmentation")
        volume, masks = self._phantom()
        reference, ids = self._segmentation(volume, masks)
        output, outIds = self._segmentation(volume, {"liver": (np.ones((16, 40, 40), np.uint8), [0.5, 0.5, 0.0])},
                                            "my work")
        before = self._segmentState(output, volume)
        result = KnowledgeSAMLogic().segment(volume, volume, reference, ["kidney", "artery"], output, mode="anchor",
                                             engine=self._copyEngine)
        self.assertIs(result, output)
        after = self._segmentState(output, volume)
        self.assertEqual(after[outIds["liver"]], before[outIds["liver"]])
        segmentation = output.GetSegmentation()
        for name in ("kidney", "artery"):
            segmentId = segmentation.GetSegmentIdBySegmentName(name)
            self.assertTrue(segmentId, f"output segment {name} missing")
            np.testing.assert_allclose(segmentation.GetSegment(segmentId).GetColor(), masks[name][1], atol=1e-6)
            written = slicer.util.arrayFromSegmentBinaryLabelmap(output, segmentId, volume)
            np.testing.assert_array_equal(written != 0, masks[name][0] != 0)
        self.delayDisplay("Write-back passed")

    def test_failed_run_leaves_scene_unchanged(self):
        from KnowledgeSAMLib.errors import CancelledError, InputError
        from KnowledgeSAMLib.infer.cancel import CancelToken

        self.delayDisplay("Failed and cancelled runs change nothing")
        volume, masks = self._phantom()
        reference, ids = self._segmentation(volume, masks)
        nodesBefore = slicer.mrmlScene.GetNumberOfNodes()
        stateBefore = self._segmentState(reference, volume)
        logic = KnowledgeSAMLogic()
        with self.assertRaises(InputError):
            logic.segment(volume, volume, reference, ["no such segment"], engine=self._copyEngine)
        token = CancelToken()
        token.cancel()
        with self.assertRaises(CancelledError):
            logic.segment(volume, volume, reference, ["kidney"], cancel=token, engine=self._copyEngine)
        self.assertEqual(slicer.mrmlScene.GetNumberOfNodes(), nodesBefore)
        self.assertEqual(self._segmentState(reference, volume), stateBefore)
        self.delayDisplay("Failure handling passed")

    def test_widget_checklist_and_apply_state(self):
        self.delayDisplay("Panel: checklist and Apply state")
        volume, masks = self._phantom()
        reference, ids = self._segmentation(volume, masks)
        widget = slicer.modules.knowledgesam.widgetRepresentation().self()
        parameterNode = widget.logic.getParameterNode()
        parameterNode.targetVolume = volume
        parameterNode.referenceSegmentation = reference
        widget.setParameterNode(parameterNode)
        listWidget = widget.ui.segmentsListWidget
        self.assertEqual(listWidget.count, 2)
        self.assertEqual(sorted(widget._checkedSegmentIds()), sorted(ids.values()))
        self.assertTrue(widget.ui.applyButton.enabled)
        for row in range(listWidget.count):
            listWidget.item(row).setCheckState(qt.Qt.Unchecked)
        self.assertEqual(widget._checkedSegmentIds(), [])
        self.assertFalse(widget.ui.applyButton.enabled)
        self.delayDisplay("Panel passed")

    def test_sample_data_loads(self):
        import SampleData

        from KnowledgeSAMSlicer import sampledata

        self.delayDisplay("Sample data")
        registerSampleData()
        nodes = SampleData.downloadSamples(sampledata.SAMPLE_NAME)
        classes = sorted(node.GetClassName() for node in nodes)
        self.assertEqual(classes, ["vtkMRMLScalarVolumeNode", "vtkMRMLSegmentationNode"])
        segmentation = [n for n in nodes if n.IsA("vtkMRMLSegmentationNode")][0]
        self.assertGreater(segmentation.GetSegmentation().GetNumberOfSegments(), 0)
        self.delayDisplay("Sample data passed")

    def test_real_engine_tiny_model(self):
        """The real engine with a randomly initialised tiny model: geometry and names, not accuracy."""
        import importlib.util

        if importlib.util.find_spec("torch") is None:
            self.delayDisplay("PyTorch is not installed: real-engine test skipped (press 'Install dependencies')")
            return
        import warnings

        import numpy as np

        from KnowledgeSAMLib.model.registry import resolve_model

        self.delayDisplay("Real engine, tiny model")
        volume, masks = self._phantom()
        reference, ids = self._segmentation(volume, masks)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            model = resolve_model("tiny")
        output = KnowledgeSAMLogic().segment(volume, volume, reference, ["kidney"], referenceSliceIndex=8,
                                             mode="anchor", device="cpu", model=model)
        segmentation = output.GetSegmentation()
        self.assertEqual(segmentation.GetNumberOfSegments(), 1)
        segmentId = segmentation.GetSegmentIdBySegmentName("kidney")
        written = slicer.util.arrayFromSegmentBinaryLabelmap(output, segmentId, volume)
        self.assertEqual(written.shape, slicer.util.arrayFromVolume(volume).shape)
        # the user's labelled slice is kept as drawn (the engine's keep_reference_labels)
        np.testing.assert_array_equal(written[8] != 0, masks["kidney"][0][8] != 0)
        self.delayDisplay("Real engine passed")
