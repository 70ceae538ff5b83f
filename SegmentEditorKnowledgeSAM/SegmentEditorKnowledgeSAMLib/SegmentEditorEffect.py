"""Segment Editor effect "Knowledge SAM": fill a segment from its own labelled slices, or from another volume.

The knowledge prompt is either the selected segment's labelled slice(s) on the source volume (draw one
or a few slices with Paint/Draw, then fill the rest) or a chosen reference volume + segmentation +
segment (another patient); an optional ROI box says where to look. The result is previewed in a temporary
segmentation, then applied through ``modifySelectedSegmentByLabelmap`` so that masking (editable area,
intensity range), overwrite mode and undo behave as for every other effect. Inference runs in the
extension's inference process (never starved by Slicer's main thread). The annotator's loop: after correcting
slices of the result, *Update* recomputes only the slab around them (one undo step, your slices kept as drawn);
*Structure absent here*, the per-slice list (confidence, your slices, absent ones) and *Next slice to check*.

This file is Qt wiring only: what the effect does is ``KnowledgeSAMSlicer.editoreffect.EffectPresenter``,
tested headless on slicer-core's ``vtkSlicerSegmentEditorLogic``. Opening a Segment Editor imports nothing
heavy: no torch, no model (the device list offers the words, not the GPUs).
"""

import os

import qt

import slicer
from slicer.i18n import tr as _

from SegmentEditorEffects import AbstractScriptedSegmentEditorEffect

__all__ = ["SegmentEditorEffect"]

PROMPT_SELF, PROMPT_OTHER = "labelled slices of this segment", "another volume"  # as in editoreffect
ROI_REFERENCE_ROLE = "KnowledgeSAM.ROI"  # the ROI node, referenced from the segment editor node


class ScriptedEffectAccess:
    """The editor calls the presenter needs, on this effect's ``qSlicerSegmentEditorScriptedEffect``."""

    def __init__(self, scriptedEffect):
        self.scriptedEffect = scriptedEffect

    def parameterSetNode(self):
        return self.scriptedEffect.parameterSetNode()

    def sourceImageData(self):
        return self.scriptedEffect.sourceVolumeImageData()

    def defaultModifierLabelmap(self):
        return self.scriptedEffect.defaultModifierLabelmap()

    def saveStateForUndo(self):
        self.scriptedEffect.saveStateForUndo()

    def modifySelectedSegment(self, modifier):
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            modifier, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeSet)

    def removeFromSelectedSegment(self, modifier, extent):
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            modifier, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeRemove, list(extent))

    def addToSelectedSegment(self, modifier, extent):
        self.scriptedEffect.modifySelectedSegmentByLabelmap(
            modifier, slicer.qSlicerSegmentEditorAbstractEffect.ModificationModeAdd, list(extent))


class SegmentEditorEffect(AbstractScriptedSegmentEditorEffect):
    """Preview, then Apply (one undo step). ``engine`` may be set to a stand-in for tests (a module-level
    function: it runs in the inference process, e.g. ``KnowledgeSAMSlicer.standins.fillEveryAxialSlice``)."""

    engine = None

    def __init__(self, scriptedEffect):
        scriptedEffect.name = "Knowledge SAM"
        scriptedEffect.perSegment = True
        scriptedEffect.requireSegments = True
        AbstractScriptedSegmentEditorEffect.__init__(self, scriptedEffect)
        self.presenter = None  # made in setupOptionsFrame (with the monitor of its progress bar)

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
volume and one of its segments say what to find. <b>ROI</b> (optional): a box around the structure, where the
model looks. <i>Apply</i> writes the preview into the selected segment, honouring the editable area, intensity
mask and overwrite settings; <i>Undo</i> reverts it. The computation runs in a separate process (the first run
starts it and loads the model); <i>Cancel</i> stops it.<p>
<b>Annotation loop</b>: correct any slice of the result (Paint, Erase...), then press <i>Update</i>: only the slices
between your neighbouring slices are recomputed, every slice you touched is kept exactly as drawn, and it is one
undo step (with nothing changed, Update takes the slice in view as checked and yours). <i>Structure absent here</i>
marks the slice in view as empty for this segment (propagation stops there); erasing a slice does the same.
<i>Next slice to check</i> shows the slice where a correction fixes most: the voxels likely wrong there and around
it up to your labelled slices (predicted area times one minus the model's confidence). Results must be reviewed; not for clinical use.</html>""")

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

    def _nodeSelector(self, nodeTypes, toolTip, noneDisplay=None):
        selector = slicer.qMRMLNodeComboBox()
        selector.nodeTypes = nodeTypes
        selector.noneEnabled = noneDisplay is not None
        if noneDisplay is not None:
            selector.noneDisplay = noneDisplay
        selector.addEnabled = False
        selector.removeEnabled = False
        selector.setMRMLScene(slicer.mrmlScene)
        selector.setToolTip(toolTip)
        return selector

    def setupOptionsFrame(self):
        choices = self._choices()
        self.promptComboBox, _unused = self._combo(_("Prompt:"), [PROMPT_SELF, PROMPT_OTHER],
                                                   _("Where the knowledge prompt comes from."))
        self.referenceVolumeSelector = self._nodeSelector(["vtkMRMLScalarVolumeNode"],
                                                          _("The image the reference segmentation was drawn on."))
        self.referenceVolumeLabel = self.scriptedEffect.addLabeledOptionsWidget(_("Reference volume:"),
                                                                                self.referenceVolumeSelector)
        self.referenceSegmentSelector = slicer.qMRMLSegmentSelectorWidget()
        self.referenceSegmentSelector.setMRMLScene(slicer.mrmlScene)
        self.referenceSegmentSelector.setToolTip(_("The reference segmentation and the segment to find."))
        self.referenceSegmentLabel = self.scriptedEffect.addLabeledOptionsWidget(_("Reference segment:"),
                                                                                 self.referenceSegmentSelector)
        self.roiSelector = self._nodeSelector(
            ["vtkMRMLMarkupsROINode"], _("Optional: a box around the structure (Markups toolbar: ROI); the model "
                                         "looks only there. None: the region is found from the prompt."),
            _("(none: found from the prompt)"))
        self.roiSelector.connect("currentNodeChanged(vtkMRMLNode*)", self.updateMRMLFromGUI)
        self.scriptedEffect.addLabeledOptionsWidget(_("ROI:"), self.roiSelector)
        self.axisComboBox, _unused = self._combo(_("Axis:"), choices.AXES, _("Slicing plane."))
        self.modeComboBox, _unused = self._combo(
            _("Mode:"), choices.MODES, _("auto: anchor for labelled slices of this segment, volume for another "
                                         "volume. propagate: walk slice by slice from the labelled slices."))
        self._addSliceRange()
        self.deviceComboBox, _unused = self._combo(_("Device:"), [], _("Where the model runs."))
        self._addButtonsAndStatus()
        self._fillDevices()

        self._addLoop()

        from KnowledgeSAM import KnowledgeSAMLogic
        from KnowledgeSAMSlicer import editoreffect, views, worker

        monitor = worker.JobMonitor(self.progressBar, self._onJobFinished)
        self.presenter = editoreffect.EffectPresenter(ScriptedEffectAccess(self.scriptedEffect), monitor, self,
                                                      KnowledgeSAMLogic, sliceInView=views.currentSliceIndex,
                                                      jumpToSlice=views.jumpToSlice)

    def _addButtonsAndStatus(self):
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

    def _addLoop(self):
        """The annotator's loop: Update, absent slices, the per-slice list and the slice to check next."""
        self.updateButton = self._button("Update", _("Update"), _(
            "Recompute only the slices around the ones you changed since the last result (your slices are kept as "
            "drawn); with nothing changed, around the slice in view. One undo step."), self.onUpdate)
        self.absentButton = self._button("Absent", _("Structure absent here"), _(
            "Mark the slice in view as empty for this segment: it stays empty and propagation stops there."),
            self.onMarkAbsent)
        self.clearAbsentButton = self._button("ClearAbsent", _("Clear absent"), _(
            "Forget this segment's 'structure absent' slices."), self.onClearAbsent)
        self.nextSliceButton = self._button("NextSlice", _("Next slice to check"), _(
            "Show the slice of the last result where a correction fixes most (not yours, not absent)."),
            self.onNextSlice)
        loopButtons = qt.QGridLayout()
        loopButtons.addWidget(self.updateButton, 0, 0)
        loopButtons.addWidget(self.nextSliceButton, 0, 1)
        loopButtons.addWidget(self.absentButton, 1, 0)
        loopButtons.addWidget(self.clearAbsentButton, 1, 1)
        self.scriptedEffect.addLabeledOptionsWidget(_("Annotation loop:"), loopButtons)
        self.sliceList = qt.QListWidget()
        self.sliceList.setToolTip(_("Per slice of the last result: its confidence, 'yours' (kept as drawn) or "
                                    "'absent'. Click a row to show that slice."))
        self.sliceList.setMaximumHeight(120)
        self.sliceList.connect("itemClicked(QListWidgetItem*)", self.onSliceRowClicked)
        self.scriptedEffect.addLabeledOptionsWidget(_("Slices:"), self.sliceList)

    def _fillSliceList(self):
        self.sliceList.clear()
        if self.presenter is None:
            return
        for index, text in self.presenter.sliceRows(self.axisComboBox.currentText):
            item = qt.QListWidgetItem(text)
            item.setData(qt.Qt.UserRole, index)
            self.sliceList.addItem(item)

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
        """auto, the CPU and the device chosen in the module panel: no torch import when an editor opens."""
        from KnowledgeSAMSlicer import devices

        self.deviceComboBox.clear()
        for choice in devices.defaultDevices(slicer.util.settingsValue("KnowledgeSAM/Device", "auto")):
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
        parameterSetNode = effect.parameterSetNode()
        wasBlocked = self.roiSelector.blockSignals(True)
        self.roiSelector.setCurrentNode(parameterSetNode.GetNodeReference(ROI_REFERENCE_ROLE)
                                        if parameterSetNode else None)
        self.roiSelector.blockSignals(wasBlocked)
        self._updateEnabledState()
        self._fillSliceList()  # the selected segment may have changed

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
        parameterSetNode = effect.parameterSetNode()
        if parameterSetNode is not None:
            roi = self.roiSelector.currentNode()
            parameterSetNode.SetNodeReferenceID(ROI_REFERENCE_ROLE, roi.GetID() if roi else None)
        self._updateEnabledState()

    def _updateEnabledState(self):
        presenter = self.presenter
        busy = presenter is not None and presenter.busy
        other = self.promptComboBox.currentText == PROMPT_OTHER
        for widget in (self.referenceVolumeSelector, self.referenceSegmentSelector, self.referenceVolumeLabel,
                       self.referenceSegmentLabel):
            widget.setVisible(other)
        self.rangeStartSpinBox.enabled = self.rangeCheckBox.checked
        self.rangeStopSpinBox.enabled = self.rangeCheckBox.checked
        self.previewButton.enabled = not busy
        for button in (self.updateButton, self.absentButton, self.clearAbsentButton, self.nextSliceButton):
            button.enabled = presenter is not None and not busy
        self.applyButton.enabled = presenter is not None and presenter.canApply
        self.cancelButton.enabled = busy or (presenter is not None and presenter.previewMask is not None)

    # ------------------------------------------------------------------ the presenter's view

    def setStatus(self, text, error=False):
        self.statusLabel.text = text
        self.statusLabel.setStyleSheet("color: #c0392b;" if error else "")

    def refresh(self):
        self._updateEnabledState()
        self._fillSliceList()

    # ------------------------------------------------------------------ actions

    def options(self):
        """What the options ask for, as the presenter's ``EffectOptions``."""
        from KnowledgeSAMSlicer.editoreffect import EffectOptions

        sliceRange = (self.rangeStartSpinBox.value, self.rangeStopSpinBox.value) if self.rangeCheckBox.checked else None
        return EffectOptions(
            prompt=self.promptComboBox.currentText, axis=self.axisComboBox.currentText,
            mode=self.modeComboBox.currentText, device=self._device(), sliceRange=sliceRange,
            referenceVolume=self.referenceVolumeSelector.currentNode(),
            referenceSegmentation=self.referenceSegmentSelector.currentNode(),
            referenceSegmentId=self.referenceSegmentSelector.currentSegmentID(), roiNode=self.roiSelector.currentNode(),
            engine=self.engine)

    def _libraryReady(self):
        from KnowledgeSAMSlicer import environment

        reason = environment.libraryUnavailableReason()
        if reason:
            self.setStatus(reason, error=True)
        return not reason

    def onPreview(self):
        if self._libraryReady():
            self.presenter.preview(self.options())

    def onUpdate(self):
        if self._libraryReady():
            self.presenter.update(self.options())

    def onMarkAbsent(self):
        if self._libraryReady():
            self.presenter.markAbsent(self.options())

    def onClearAbsent(self):
        if self._libraryReady():
            self.presenter.clearAbsent(self.options())

    def onNextSlice(self):
        if self._libraryReady():
            self.presenter.nextSliceToCheck(self.options())

    def onSliceRowClicked(self, item):
        if self._libraryReady():
            self.presenter.showSlice(self.options(), int(item.data(qt.Qt.UserRole)))

    def onPoll(self):
        """Check the running job now (the monitor's timer does this every 150 ms)."""
        self.presenter.monitor.poll()

    def _onJobFinished(self, job):
        self.presenter.onJobFinished(job)

    def onApply(self):
        with slicer.util.tryWithErrorDisplay(_("Applying the KnowledgeSAM result failed."), waitCursor=True):
            self.presenter.apply(self.scriptedEffect.confirmCurrentSegmentVisible)

    def onCancel(self):
        self.presenter.cancel()

    def deactivate(self):
        if self.presenter is not None:
            self.presenter.deactivate()
            self._updateEnabledState()

    def sourceVolumeNodeChanged(self):
        self.deactivate()

    masterVolumeNodeChanged = sourceVolumeNodeChanged  # Slicer < 5.4 name
