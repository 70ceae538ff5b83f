"""Segment Editor effect "Knowledge SAM": fill a segment from its own labelled slices, or from another volume.

The knowledge prompt is either the selected segment's labelled slice(s) on the source volume (draw one
or a few slices with Paint/Draw, then fill the rest) or a chosen reference volume + segmentation +
segment (another patient). The result is previewed in a temporary segmentation, then applied through
``modifySelectedSegmentByLabelmap`` so that masking (editable area, intensity range), overwrite mode and
undo behave as for every other effect. Inference runs on the module's persistent worker thread.
"""

import logging
import os
import traceback

import qt

import slicer
from slicer.i18n import tr as _

from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

__all__ = ["SegmentEditorEffect"]

PROMPT_SELF, PROMPT_OTHER = "labelled slices of this segment", "another volume"
PREVIEW_NODE_NAME = "KnowledgeSAM preview"


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Preview, then Apply (one undo step). ``engine`` may be set to a stand-in for tests."""

    engine = None  # None: the real engine; tests put a callable with the engine's signature here

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Knowledge SAM"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self._monitor = None  # KnowledgeSAMSlicer.worker.JobMonitor: the running job, if any
        self._logic = None  # one KnowledgeSAMLogic: the model and the reference's encoding are reused
        self._run = None  # what the preview was computed for (see _startPreview)
        self._previewMask = None
        self._previewNode = None
        self._discardResult = False  # the effect was deactivated while computing

    def clone(self):
        import qSlicerSegmentationsEditorEffectsPythonQt as effects

        clonedEffect = effects.qSlicerSegmentEditorScriptedEffect(None)
        clonedEffect.setPythonSource(__file__.replace("\\", "/"))
        return clonedEffect

    def icon(self):
        iconPath = os.path.join(os.path.dirname(__file__), "SegmentEditorEffect.png")
        return qt.QIcon(iconPath) if os.path.exists(iconPath) else qt.QIcon()

    def helpText(self):
        return _("""<html>Fill the selected segment by example (KnowledgeSAM).<p>
<b>Labelled slices of this segment</b>: draw the structure on one or a few slices (Paint, Draw...), then
press <i>Preview</i>: the other slices (or the slice range) are filled. <b>Another volume</b>: a reference
volume and one of its segments say what to find. <i>Apply</i> writes the preview into the selected segment,
honouring the editable area, intensity mask and overwrite settings; <i>Undo</i> reverts it.
The first run loads the model (a few seconds). Results must be reviewed; not for clinical use.</html>""")

    # ------------------------------------------------------------------ options

    @staticmethod
    def _choices():
        from KnowledgeSAMSlicer import environment

        return environment.libraryChoices()

    def _combo(self, label, items, toolTip):
        combo = qt.QComboBox()
        combo.addItems(list(items))
        combo.setToolTip(toolTip)
        combo.connect("currentIndexChanged(int)", self.updateMRMLFromGUI)
        return combo, self.scriptedEffect.addLabeledOptionsWidget(label, combo)

    def _button(self, name, text, toolTip, slot):
        button = qt.QPushButton(text)
        button.objectName = self.__class__.__name__ + name
        button.setToolTip(toolTip)
        button.connect("clicked()", slot)
        return button

    def setupOptionsFrame(self):
        choices = self._choices()
        self.promptComboBox, _unused = self._combo(_("Prompt:"), [PROMPT_SELF, PROMPT_OTHER],
                                                   _("Where the knowledge prompt comes from."))
        self.referenceVolumeSelector = slicer.qMRMLNodeComboBox()
        self.referenceVolumeSelector.nodeTypes = ["vtkMRMLScalarVolumeNode"]
        self.referenceVolumeSelector.noneEnabled = False
        self.referenceVolumeSelector.addEnabled = False
        self.referenceVolumeSelector.removeEnabled = False
        self.referenceVolumeSelector.setMRMLScene(slicer.mrmlScene)
        self.referenceVolumeSelector.setToolTip(_("The image the reference segmentation was drawn on."))
        self.referenceVolumeLabel = self.scriptedEffect.addLabeledOptionsWidget(_("Reference volume:"),
                                                                                self.referenceVolumeSelector)
        self.referenceSegmentSelector = slicer.qMRMLSegmentSelectorWidget()
        self.referenceSegmentSelector.setMRMLScene(slicer.mrmlScene)
        self.referenceSegmentSelector.setToolTip(_("The reference segmentation and the segment to find."))
        self.referenceSegmentLabel = self.scriptedEffect.addLabeledOptionsWidget(_("Reference segment:"),
                                                                                 self.referenceSegmentSelector)
        self.axisComboBox, _unused = self._combo(_("Axis:"), choices.AXES, _("Slicing plane."))
        self.modeComboBox, _unused = self._combo(
            _("Mode:"), choices.MODES, _("auto: anchor for labelled slices of this segment, volume for another "
                                         "volume. propagate: walk slice by slice from the labelled slices."))
        self._addSliceRange()
        self.deviceComboBox, _unused = self._combo(_("Device:"), [], _("Where the model runs."))

        self.previewButton = self._button("Preview", _("Preview"), _("Compute the result and show it without "
                                                                     "changing the segment."), self.onPreview)
        self.cancelButton = self._button("Cancel", _("Cancel"), _("Stop a running computation, or discard the "
                                                                  "preview."), self.onCancel)
        self.applyButton = self._button("Apply", _("Apply"), _("Write the preview into the selected segment (one "
                                                               "undo step)."), self.onApply)
        buttons = qt.QHBoxLayout()
        for button in (self.previewButton, self.cancelButton, self.applyButton):
            buttons.addWidget(button)
        self.scriptedEffect.addOptionsWidget(buttons)
        self.progressBar = qt.QProgressBar()
        self.progressBar.setVisible(False)
        self.scriptedEffect.addOptionsWidget(self.progressBar)
        self.statusLabel = qt.QLabel("")
        self.statusLabel.wordWrap = True
        self.scriptedEffect.addOptionsWidget(self.statusLabel)

        from KnowledgeSAMSlicer import worker

        self._monitor = worker.JobMonitor(self.progressBar, self._onJobFinished)
        self._fillDevices()

    def _addSliceRange(self):
        self.rangeCheckBox = qt.QCheckBox(_("only slices"))
        self.rangeCheckBox.setToolTip(_("Fill only these slices (start included, stop excluded); the rest of the "
                                        "segment is kept."))
        self.rangeStartSpinBox = qt.QSpinBox()
        self.rangeStopSpinBox = qt.QSpinBox()
        rangeLayout = qt.QHBoxLayout()
        rangeLayout.addWidget(self.rangeCheckBox)
        rangeLayout.addWidget(self.rangeStartSpinBox)
        rangeLayout.addWidget(qt.QLabel(_("to")))
        rangeLayout.addWidget(self.rangeStopSpinBox)
        self.scriptedEffect.addLabeledOptionsWidget(_("Slice range:"), rangeLayout)
        self.rangeCheckBox.connect("toggled(bool)", self.updateMRMLFromGUI)
        for spinBox in (self.rangeStartSpinBox, self.rangeStopSpinBox):
            spinBox.maximum = 100000
            spinBox.connect("valueChanged(int)", self.updateMRMLFromGUI)

    def _fillDevices(self):
        try:
            from KnowledgeSAMSlicer import devices

            choices = devices.availableDevices()
        except Exception as error:
            logging.warning(f"KnowledgeSAM effect: could not list devices: {error}")
            choices = []
        self.deviceComboBox.clear()
        if not choices:
            default = self._choices().DEFAULT_DEVICE
            self.deviceComboBox.addItem(default, default)
        for choice in choices:
            self.deviceComboBox.addItem(choice.label, choice.value)

    def createCursor(self, widget):
        return slicer.util.mainWindow().cursor

    def setMRMLDefaults(self):
        choices = self._choices()
        self.scriptedEffect.setParameterDefault("KnowledgeSAM.Prompt", PROMPT_SELF)
        self.scriptedEffect.setParameterDefault("KnowledgeSAM.Axis", choices.DEFAULT_AXIS)
        self.scriptedEffect.setParameterDefault("KnowledgeSAM.Mode", choices.DEFAULT_MODE)
        self.scriptedEffect.setParameterDefault("KnowledgeSAM.UseRange", 0)
        self.scriptedEffect.setParameterDefault("KnowledgeSAM.RangeStart", 0)
        self.scriptedEffect.setParameterDefault("KnowledgeSAM.RangeStop", 0)
        self.scriptedEffect.setParameterDefault("KnowledgeSAM.Device", choices.DEFAULT_DEVICE)

    @staticmethod
    def _setCombo(combo, text):
        wasBlocked = combo.blockSignals(True)
        index = combo.findText(text)
        if index < 0:
            index = combo.findData(text)
        if index >= 0:
            combo.setCurrentIndex(index)
        combo.blockSignals(wasBlocked)

    def updateGUIFromMRML(self):
        effect = self.scriptedEffect
        self._setCombo(self.promptComboBox, effect.parameter("KnowledgeSAM.Prompt"))
        self._setCombo(self.axisComboBox, effect.parameter("KnowledgeSAM.Axis"))
        self._setCombo(self.modeComboBox, effect.parameter("KnowledgeSAM.Mode"))
        self._setCombo(self.deviceComboBox, effect.parameter("KnowledgeSAM.Device"))
        for widget, value in ((self.rangeCheckBox, None), (self.rangeStartSpinBox, "KnowledgeSAM.RangeStart"),
                              (self.rangeStopSpinBox, "KnowledgeSAM.RangeStop")):
            wasBlocked = widget.blockSignals(True)
            if value is None:
                widget.checked = effect.integerParameter("KnowledgeSAM.UseRange") != 0
            else:
                widget.value = effect.integerParameter(value)
            widget.blockSignals(wasBlocked)
        self._updateEnabledState()

    def _device(self):
        return self.deviceComboBox.currentData or self._choices().DEFAULT_DEVICE

    def updateMRMLFromGUI(self, *unused):
        effect = self.scriptedEffect
        effect.setParameter("KnowledgeSAM.Prompt", self.promptComboBox.currentText)
        effect.setParameter("KnowledgeSAM.Axis", self.axisComboBox.currentText)
        effect.setParameter("KnowledgeSAM.Mode", self.modeComboBox.currentText)
        effect.setParameter("KnowledgeSAM.UseRange", 1 if self.rangeCheckBox.checked else 0)
        effect.setParameter("KnowledgeSAM.RangeStart", self.rangeStartSpinBox.value)
        effect.setParameter("KnowledgeSAM.RangeStop", self.rangeStopSpinBox.value)
        effect.setParameter("KnowledgeSAM.Device", self._device())
        self._updateEnabledState()

    @property
    def _job(self):
        """The running job (None when idle)."""
        return self._monitor.job if self._monitor is not None else None

    def _updateEnabledState(self):
        busy = self._job is not None
        other = self.promptComboBox.currentText == PROMPT_OTHER
        for widget in (self.referenceVolumeSelector, self.referenceSegmentSelector, self.referenceVolumeLabel,
                       self.referenceSegmentLabel):
            widget.setVisible(other)
        self.rangeStartSpinBox.enabled = self.rangeCheckBox.checked
        self.rangeStopSpinBox.enabled = self.rangeCheckBox.checked
        self.previewButton.enabled = not busy
        self.applyButton.enabled = (not busy) and self._previewMask is not None
        self.cancelButton.enabled = busy or self._previewMask is not None

    def setStatus(self, text, error=False):
        self.statusLabel.text = text
        self.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    def deactivate(self):
        if self._job is not None:
            self._discardResult = True
        self.onCancel()

    def sourceVolumeNodeChanged(self):
        self.onCancel()

    masterVolumeNodeChanged = sourceVolumeNodeChanged  # Slicer < 5.4 name

    # ------------------------------------------------------------------ preview

    def _sourceVolumeNode(self):
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        getter = getattr(parameterSetNode, "GetSourceVolumeNode", None) or parameterSetNode.GetMasterVolumeNode
        return getter()

    def _alignedSourceAsVolume(self, segmentationNode):
        """The editor's source image (resampled to the segmentation's geometry) as a temporary volume node
        under the segmentation's transform, so predictions map 1:1 onto the editor's modifier labelmap."""
        volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "__KnowledgeSAM_source__")
        volume.SetHideFromEditors(True)
        volume.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        slicer.vtkSlicerSegmentationsModuleLogic.CopyOrientedImageDataToVolumeNode(
            self.scriptedEffect.sourceVolumeImageData(), volume)
        return volume

    def onPreview(self):
        if self._job is not None:
            return
        try:
            from KnowledgeSAMSlicer import environment

            reason = environment.libraryUnavailableReason()
            if reason:
                raise RuntimeError(reason)
            self._startPreview()
        except Exception as error:
            self._clearRun()
            self.setStatus(str(error), error=True)
            logging.error(traceback.format_exc())
        self._updateEnabledState()

    def _prepare(self, source, segmentationNode, segmentId, sliceRange):
        """The engine request for this preview, read from the nodes (the temporary source volume included)."""
        if self._logic is None:
            from KnowledgeSAM import KnowledgeSAMLogic

            self._logic = KnowledgeSAMLogic()
        options = dict(axis=self.axisComboBox.currentText, mode=self.modeComboBox.currentText,
                       device=self._device(), sliceRange=sliceRange)
        if self.promptComboBox.currentText == PROMPT_SELF:
            return self._logic.prepare(source, source, segmentationNode, [segmentId], **options)
        referenceVolume = self.referenceVolumeSelector.currentNode()
        referenceSegmentation = self.referenceSegmentSelector.currentNode()
        referenceSegmentId = self.referenceSegmentSelector.currentSegmentID()
        if referenceVolume is None or referenceSegmentation is None or not referenceSegmentId:
            raise RuntimeError(_("Choose a reference volume, segmentation and segment."))
        return self._logic.prepare(source, referenceVolume, referenceSegmentation, [referenceSegmentId], **options)

    def _startPreview(self):
        from KnowledgeSAMLib import mrml

        parameterSetNode = self.scriptedEffect.parameterSetNode()
        segmentationNode = parameterSetNode.GetSegmentationNode()
        segmentId = parameterSetNode.GetSelectedSegmentID()
        if not segmentId or self._sourceVolumeNode() is None:
            raise RuntimeError(_("Select a source volume and a segment first."))
        self._removePreviewNode()
        sliceRange = (self.rangeStartSpinBox.value, self.rangeStopSpinBox.value) if self.rangeCheckBox.checked else None
        source = self._alignedSourceAsVolume(segmentationNode)  # the only temporary node of a run
        try:
            prepared = self._prepare(source, segmentationNode, segmentId, sliceRange)
            original = mrml.labels_from_segmentation_node(segmentationNode, [segmentId], source)
        finally:
            slicer.mrmlScene.RemoveNode(source)  # the request holds a copy of the voxels, and their geometry
        self._run = {"segmentId": segmentId, "axis": self.axisComboBox.currentText, "sliceRange": sliceRange,
                     "original": original.mask(original.segments[0]), "grid": prepared.request.target.geometry,
                     "segmentationNode": segmentationNode}
        logic, engine = self._logic, self.engine

        def work(progress, cancel):
            return logic.runPrepared(prepared, progressCallback=progress, cancel=cancel, engine=engine)

        self._monitor.start(work)
        self.setStatus(_("Computing (the first run loads the model)..."))

    def onPoll(self):
        """Check the running job now (the monitor's timer does this every 150 ms)."""
        self._monitor.poll()

    def _onJobFinished(self, job):
        if self._discardResult:
            self._discardResult = False
            self._clearRun()
            self._updateEnabledState()
            return
        try:
            result = job.result()
            self._previewMask = self._combine(result)
            self._showPreview()
            self.setStatus(_("Preview ready ({seconds:.1f} s on {device}). Apply writes it into the segment.").format(
                seconds=job.elapsedSeconds, device=(result.provenance or {}).get("device", "?")))
        except Exception as error:
            from KnowledgeSAMLib.errors import CancelledError

            self._clearRun()
            if isinstance(error, CancelledError):
                self.setStatus(_("Cancelled; nothing was changed."))
            else:
                self.setStatus(str(error), error=True)
                logging.error("".join(traceback.format_exception(type(error), error, error.__traceback__)))
        self._updateEnabledState()

    def _combine(self, result):
        """Final segment on the aligned source grid: the prediction inside the slice range (all slices if
        none), the segment as it was outside it."""
        import numpy as np

        from KnowledgeSAMLib import mrml

        labels = result.labels
        prediction = labels.mask(labels.segments[0]) if labels.segments else np.zeros_like(self._run["original"])
        return mrml.replace_slices(self._run["original"], prediction, self._run["grid"], self._run["axis"],
                                   self._run["sliceRange"])

    def _modifierFromMask(self, mask):
        """The mask as a labelmap in the editor's modifier geometry (exact: both are the aligned source grid)."""
        from KnowledgeSAMLib import mrml

        labelmap = mrml.oriented_image_from_mask(mask, self._run["grid"])
        modifier = slicer.vtkOrientedImageData()
        reference = self.scriptedEffect.defaultModifierLabelmap()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(labelmap, reference,
                                                                                                 modifier):
            raise RuntimeError(_("Could not map the result onto the segmentation's geometry."))
        return modifier

    def _showPreview(self):
        segmentationNode = self._run["segmentationNode"]
        segment = segmentationNode.GetSegmentation().GetSegment(self._run["segmentId"])
        node = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLSegmentationNode", PREVIEW_NODE_NAME)
        node.SetHideFromEditors(True)
        node.CreateDefaultDisplayNodes()
        node.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        previewId = node.GetSegmentation().AddEmptySegment("", segment.GetName(), segment.GetColor())
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        logic.SetBinaryLabelmapToSegment(self._modifierFromMask(self._previewMask), node, previewId, logic.MODE_REPLACE)
        node.GetDisplayNode().SetOpacity(0.6)
        self._previewNode = node

    # ------------------------------------------------------------------ apply / cancel

    def onApply(self):
        if self._previewMask is None or self._run is None:
            return
        parameterSetNode = self.scriptedEffect.parameterSetNode()
        if parameterSetNode.GetSelectedSegmentID() != self._run["segmentId"]:
            self.setStatus(_("The selected segment changed since the preview; press Preview again."), error=True)
            return
        if not self.scriptedEffect.confirmCurrentSegmentVisible():
            return
        with slicer.util.tryWithErrorDisplay(_("Applying the KnowledgeSAM result failed."), waitCursor=True):
            modifier = self._modifierFromMask(self._previewMask)
            self.scriptedEffect.saveStateForUndo()
            self.scriptedEffect.modifySelectedSegmentByLabelmap(
                modifier, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)
            self.setStatus(_("Applied. Undo reverts it."))
        self._clearRun()
        self._updateEnabledState()

    def onCancel(self):
        if self._job is not None:
            self._monitor.cancel()
            self.setStatus(_("Cancelling after the current batch..."))
            return
        self._clearRun()
        self._updateEnabledState()

    def _removePreviewNode(self):
        if self._previewNode is not None:
            from KnowledgeSAMLib import mrml

            mrml.remove_node(self._previewNode)  # with its display node
        self._previewNode = None

    def _clearRun(self):
        self._removePreviewNode()
        self._previewMask = None
        self._run = None
