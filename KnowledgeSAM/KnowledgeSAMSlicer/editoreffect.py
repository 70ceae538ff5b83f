"""What the Segment Editor effect does, without Qt: preview a fill of the selected segment, apply it through the
editor (masking, overwrite mode, undo), cancel, and forget it all when the effect is left.

Why a presenter: the effect (SegmentEditorKnowledgeSAMLib/SegmentEditorEffect.py) only wires widgets to it,
so the behaviour runs headless on slicer-core's ``vtkSlicerSegmentEditorLogic`` in plain pytest. The editor
is reached through a small adapter with the calls both sides have:

* :class:`EditorLogicAccess` — ``vtkSlicerSegmentEditorLogic`` (Slicer >= 5.10, slicer-core, scripts);
* the effect's own adapter around ``qSlicerSegmentEditorScriptedEffect`` (``sourceVolumeImageData``,
  ``defaultModifierLabelmap``, ``saveStateForUndo``, ``modifySelectedSegmentByLabelmap``).

Both hand the result to the editor as a modifier labelmap in "set" mode, so the editable area, the intensity
range, the overwrite mode and undo behave as for every other effect.
"""

import logging
import traceback
from dataclasses import dataclass

__all__ = ["EffectOptions", "EffectPresenter", "EditorLogicAccess", "PROMPT_SELF", "PROMPT_OTHER",
           "PREVIEW_NODE_NAME"]

PROMPT_SELF, PROMPT_OTHER = "labelled slices of this segment", "another volume"
PREVIEW_NODE_NAME = "KnowledgeSAM preview"


@dataclass
class EffectOptions:
    """What the effect's options ask for (read from its widgets, or given by a test or script)."""

    prompt: str = PROMPT_SELF
    axis: str = "axial"
    mode: str = "auto"
    device: str = "auto"
    sliceRange: tuple = None
    referenceVolume: object = None  # PROMPT_OTHER: the image the reference segment was drawn on
    referenceSegmentation: object = None
    referenceSegmentId: str = ""
    roiNode: object = None  # an ROI markup around the structure (None: found from the reference)
    engine: object = None  # a picklable stand-in engine (tests); None: the real one


class EditorLogicAccess:
    """The editor calls the presenter needs, on ``vtkSlicerSegmentEditorLogic`` (its segment editor node
    holds the segmentation, the source volume, the selected segment and the masking settings)."""

    def __init__(self, logic):
        self.logic = logic

    def parameterSetNode(self):
        return self.logic.GetSegmentEditorNode()

    def sourceImageData(self):
        """The source volume resampled to the segmentation's geometry (as the effect's ``sourceVolumeImageData``)."""
        self.logic.UpdateAlignedSourceVolume()
        return self.logic.GetAlignedSourceVolume()

    def defaultModifierLabelmap(self):
        self.logic.ResetModifierLabelmapToDefault()
        return self.logic.GetModifierLabelmap()

    def saveStateForUndo(self):
        self.logic.SaveStateForUndo()

    def modifySelectedSegment(self, modifier):
        node = self.parameterSetNode()
        self.logic.ModifySegmentByLabelmap(node.GetSegmentationNode(), node.GetSelectedSegmentID(), modifier,
                                           self.logic.ModificationModeSet, True, False)


def _slicer():
    import slicer

    return slicer


class EffectPresenter:
    """Preview, then Apply (one undo step).

    :param editor: an editor adapter (:class:`EditorLogicAccess`, or the effect's).
    :param monitor: a ``worker.JobMonitor`` whose ``finished`` callback is :meth:`onJobFinished`.
    :param view: ``setStatus(text, error=False)`` and ``refresh()``.
    :param logicFactory: returns the ``KnowledgeSAMLogic`` that reads the nodes (made on first use).
    """

    def __init__(self, editor, monitor, view, logicFactory):
        self.editor = editor
        self.monitor = monitor
        self.view = view
        self._logicFactory = logicFactory
        self._logic = None
        self._run = None  # what the running job or the preview was computed for
        self.previewMask = None
        self.previewNode = None
        self._discard = False
        self._sceneWatch = None  # (scene, observer tag): a scene closing during a run cancels it

    @property
    def busy(self):
        return self.monitor.busy

    @property
    def canApply(self):
        return not self.busy and self.previewMask is not None

    # ------------------------------------------------------------------ preview

    def preview(self, options):
        """Check the inputs and start the computation; False when refused (the status says why)."""
        if self.busy:
            return False
        try:
            self._start(options)
        except Exception as error:  # every refusal is one status line; a bug also lands in the log
            self.clear()
            self.view.setStatus(str(error), error=True)
            from KnowledgeSAMLib.errors import KnowledgeSAMError

            if not isinstance(error, (KnowledgeSAMError, ValueError)):
                logging.error(traceback.format_exc())
            return False
        finally:
            self.view.refresh()
        self.view.setStatus("Computing (the first run starts the inference process and loads the model)...")
        return True

    def _start(self, options):
        from KnowledgeSAMLib import mrml

        node = self.editor.parameterSetNode()
        segmentationNode, segmentId = node.GetSegmentationNode(), node.GetSelectedSegmentID()
        if segmentationNode is None or not segmentId or node.GetSourceVolumeNode() is None:
            raise ValueError("Select a source volume and a segment first.")
        self._removePreviewNode()
        source = self._alignedSourceAsVolume(segmentationNode)  # the only temporary node of a run
        try:
            prepared = self._prepare(source, segmentationNode, segmentId, options)
            original = mrml.labels_from_segmentation_node(segmentationNode, [segmentId], source)
        finally:
            mrml.remove_node(source)  # the request holds a copy of the voxels, and their geometry
        self._run = {"segmentId": segmentId, "axis": options.axis, "sliceRange": options.sliceRange,
                     "original": original.mask(original.segments[0]), "grid": prepared.request.target.geometry,
                     "segmentationNode": segmentationNode}
        self._discard = False
        self.monitor.start(prepared.request, prepared.sources, engine=options.engine)
        self._watchScene(segmentationNode.GetScene())

    def _watchScene(self, scene):
        self._unwatchScene()
        tag = scene.AddObserver(scene.StartCloseEvent, lambda caller, event: self.deactivate())
        self._sceneWatch = (scene, tag)

    def _unwatchScene(self):
        if self._sceneWatch is not None:
            scene, tag = self._sceneWatch
            scene.RemoveObserver(tag)
        self._sceneWatch = None

    def _logicInstance(self):
        if self._logic is None:
            self._logic = self._logicFactory()
        return self._logic

    def _prepare(self, source, segmentationNode, segmentId, options):
        common = dict(axis=options.axis, mode=options.mode, device=options.device, sliceRange=options.sliceRange,
                      roiNode=options.roiNode)
        if options.prompt == PROMPT_SELF:
            return self._logicInstance().prepare(source, source, segmentationNode, [segmentId], **common)
        if options.referenceVolume is None or options.referenceSegmentation is None or not options.referenceSegmentId:
            raise ValueError("Choose a reference volume, segmentation and segment.")
        return self._logicInstance().prepare(source, options.referenceVolume, options.referenceSegmentation,
                                             [options.referenceSegmentId], **common)

    def _alignedSourceAsVolume(self, segmentationNode):
        """The editor's source image (on the segmentation's geometry) as a temporary volume node under the
        segmentation's transform, so predictions map 1:1 onto the editor's modifier labelmap."""
        slicer = _slicer()
        volume = segmentationNode.GetScene().AddNewNodeByClass("vtkMRMLScalarVolumeNode", "__KnowledgeSAM_source__")
        volume.SetHideFromEditors(True)
        volume.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        slicer.vtkSlicerSegmentationsModuleLogic.CopyOrientedImageDataToVolumeNode(self.editor.sourceImageData(),
                                                                                    volume)
        return volume

    # ------------------------------------------------------------------ the finished computation

    def onJobFinished(self, job):
        self._unwatchScene()
        try:
            if self._discard or self._run is None:
                self.clear()
                return
            self._showResult(job)
        finally:
            self._discard = False
            self.view.refresh()

    def _showResult(self, job):
        from KnowledgeSAMLib.errors import CancelledError, KnowledgeSAMError

        try:
            result = job.result()
            self.previewMask = self._combine(result)
            self._showPreview()
        except CancelledError:
            self.clear()
            self.view.setStatus("Cancelled; nothing was changed.")
            return
        except Exception as error:
            self.clear()
            self.view.setStatus(str(error), error=True)
            if not isinstance(error, KnowledgeSAMError):
                logging.error("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            elif getattr(error, "details", ""):
                logging.error(error.details)
            return
        self.view.setStatus("Preview ready ({seconds:.1f} s on {device}). Apply writes it into the segment.".format(
            seconds=job.elapsed_seconds, device=(result.provenance or {}).get("device", "?")))

    def _combine(self, result):
        """Final segment on the aligned source grid: the prediction inside the slice range (all slices if none),
        the segment as it was outside it."""
        import numpy as np

        from KnowledgeSAMLib import mrml

        labels = result.labels
        prediction = labels.mask(labels.segments[0]) if labels.segments else np.zeros_like(self._run["original"])
        return mrml.replace_slices(self._run["original"], prediction, self._run["grid"], self._run["axis"],
                                   self._run["sliceRange"])

    def _modifierFromMask(self, mask):
        """The mask as a labelmap in the editor's modifier geometry (exact: both are the aligned source grid)."""
        from KnowledgeSAMLib import mrml

        slicer = _slicer()
        labelmap = mrml.oriented_image_from_mask(mask, self._run["grid"])
        modifier = slicer.vtkOrientedImageData()
        reference = self.editor.defaultModifierLabelmap()
        if not slicer.vtkOrientedImageDataResample.ResampleOrientedImageToReferenceOrientedImage(labelmap, reference,
                                                                                                 modifier):
            raise RuntimeError("Could not map the result onto the segmentation's geometry.")
        return modifier

    def _showPreview(self):
        slicer = _slicer()
        segmentationNode = self._run["segmentationNode"]
        segment = segmentationNode.GetSegmentation().GetSegment(self._run["segmentId"])
        node = segmentationNode.GetScene().AddNewNodeByClass("vtkMRMLSegmentationNode", PREVIEW_NODE_NAME)
        node.SetHideFromEditors(True)
        node.CreateDefaultDisplayNodes()
        node.SetAndObserveTransformNodeID(segmentationNode.GetTransformNodeID())
        previewId = node.GetSegmentation().AddEmptySegment("", segment.GetName(), segment.GetColor())
        logic = slicer.vtkSlicerSegmentationsModuleLogic
        logic.SetBinaryLabelmapToSegment(self._modifierFromMask(self.previewMask), node, previewId, logic.MODE_REPLACE)
        if node.GetDisplayNode() is not None:
            node.GetDisplayNode().SetOpacity(0.6)
        self.previewNode = node

    # ------------------------------------------------------------------ apply / cancel

    def apply(self, confirmVisible=lambda: True):
        """Write the preview into the selected segment as one undo step; the editor's masking applies."""
        if self.previewMask is None or self._run is None:
            return False
        if self.editor.parameterSetNode().GetSelectedSegmentID() != self._run["segmentId"]:
            self.view.setStatus("The selected segment changed since the preview; press Preview again.", error=True)
            return False
        if not confirmVisible():
            return False
        modifier = self._modifierFromMask(self.previewMask)
        self.editor.saveStateForUndo()
        self.editor.modifySelectedSegment(modifier)
        self.view.setStatus("Applied. Undo reverts it.")
        self.clear()
        self.view.refresh()
        return True

    def cancel(self):
        """Stop a running computation, or discard the preview."""
        if self.busy:
            self.monitor.cancel()
            self.view.setStatus("Cancelling after the current batch...")
            return
        self.clear()
        self.view.refresh()

    def deactivate(self):
        """The effect is left, the source volume changed or the scene closes: cancel and write nothing."""
        if self.busy:
            self._discard = True
            self.monitor.cancel(discard=True)
        self.clear()

    def _removePreviewNode(self):
        if self.previewNode is not None:
            from KnowledgeSAMLib import mrml

            if self.previewNode.GetScene() is not None:
                mrml.remove_node(self.previewNode)  # with its display node
        self.previewNode = None

    def clear(self):
        self._removePreviewNode()
        self.previewMask = None
        if not self.busy:
            self._run = None
