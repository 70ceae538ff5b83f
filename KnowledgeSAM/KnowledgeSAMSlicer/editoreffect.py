"""What the Segment Editor effect does, without Qt: preview a fill of the selected segment, apply it through the
editor (masking, overwrite mode, undo), cancel, and forget it all when the effect is left; and the annotator's
loop — Update (recompute only the slab around the slices changed since the last result, kept exactly as drawn,
written as one undo step), "structure absent here", the per-slice confidence and the slice to check next.

Why a presenter: the effect (SegmentEditorKnowledgeSAMLib/SegmentEditorEffect.py) only wires widgets to it,
so the behaviour runs headless on slicer-core's ``vtkSlicerSegmentEditorLogic`` in plain pytest. The editor
is reached through a small adapter with the calls both sides have:

* :class:`EditorLogicAccess` — ``vtkSlicerSegmentEditorLogic`` (Slicer >= 5.10, slicer-core, scripts);
* the effect's own adapter around ``qSlicerSegmentEditorScriptedEffect`` (``sourceVolumeImageData``,
  ``defaultModifierLabelmap``, ``saveStateForUndo``, ``modifySelectedSegmentByLabelmap``).

Both hand the result to the editor as a modifier labelmap in "set" mode, so the editable area, the intensity
range, the overwrite mode and undo behave as for every other effect. An update is written as "remove" then "add"
restricted to the slab's extent (the editor's "set" clears the whole segment first), after one saveStateForUndo.

Which slices are the annotator's: every write leaves a record in the segment's tags (``KnowledgeSAMLib.mrml.loop``):
a slice that differs from what was written was changed by the annotator and is kept as drawn.
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

    def _modifyInExtent(self, modifier, mode, extent):
        node = self.parameterSetNode()
        self.logic.ModifySegmentByLabelmap(node.GetSegmentationNode(), node.GetSelectedSegmentID(), modifier, mode,
                                           list(extent), True, False)

    def removeFromSelectedSegment(self, modifier, extent):
        self._modifyInExtent(modifier, self.logic.ModificationModeRemove, extent)

    def addToSelectedSegment(self, modifier, extent):
        self._modifyInExtent(modifier, self.logic.ModificationModeAdd, extent)


def _slicer():
    import slicer

    return slicer


class EffectPresenter:
    """Preview, then Apply (one undo step).

    :param editor: an editor adapter (:class:`EditorLogicAccess`, or the effect's).
    :param monitor: a ``worker.JobMonitor`` whose ``finished`` callback is :meth:`onJobFinished`.
    :param view: ``setStatus(text, error=False)`` and ``refresh()``.
    :param logicFactory: returns the ``KnowledgeSAMLogic`` that reads the nodes (made on first use).
    :param sliceInView: ``(volumeNode, axis) -> index`` of the slice the view of ``axis`` shows (None: no views).
    :param jumpToSlice: ``(volumeNode, axis, index)``: show that slice in the view of ``axis``.
    """

    def __init__(self, editor, monitor, view, logicFactory, sliceInView=None, jumpToSlice=None):
        self.editor = editor
        self.monitor = monitor
        self.view = view
        self._logicFactory = logicFactory
        self._sliceInView = sliceInView
        self._jumpToSlice = jumpToSlice
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

    # ------------------------------------------------------------------ preview, update

    def preview(self, options):
        """Check the inputs and start the computation; False when refused (the status says why)."""
        return self._begin(options, update=False)

    def update(self, options):
        """Recompute only the slab around the slices changed since the last result (or, when none changed, the
        slice in view: it then counts as checked and yours); written when done, as one undo step."""
        return self._begin(options, update=True)

    def _begin(self, options, update):
        if self.busy:
            return False
        try:
            self._start(options, update)
        except Exception as error:  # every refusal is one status line; a bug also lands in the log
            self.clear()
            self._refusal(error)
            return False
        finally:
            self.view.refresh()
        self.view.setStatus("Updating around slice(s) {slices}...".format(slices=", ".join(
            map(str, self._run["update"]))) if update else
            "Computing (the first run starts the inference process and loads the model)...")
        return True

    def _refusal(self, error):
        from KnowledgeSAMLib.errors import KnowledgeSAMError

        self.view.setStatus(str(error), error=True)
        if not isinstance(error, (KnowledgeSAMError, ValueError)):
            logging.error(traceback.format_exc())

    def _selection(self):
        node = self.editor.parameterSetNode()
        segmentationNode, segmentId = node.GetSegmentationNode(), node.GetSelectedSegmentID()
        if segmentationNode is None or not segmentId or node.GetSourceVolumeNode() is None:
            raise ValueError("Select a source volume and a segment first.")
        return segmentationNode, segmentId

    def _onAlignedSource(self, segmentationNode, work):
        """``work(source)`` with the editor's source image as a temporary volume node (removed afterwards)."""
        from KnowledgeSAMLib import mrml

        source = self._alignedSourceAsVolume(segmentationNode)
        try:
            return work(source)
        finally:
            mrml.remove_node(source)

    def _state(self, source, segmentationNode, segmentId, axis):
        from KnowledgeSAMLib import mrml

        return mrml.segment_states(segmentationNode, [segmentId], source, axis)[0]

    def _start(self, options, update):
        segmentationNode, segmentId = self._selection()
        self._removePreviewNode()

        def read(source):  # the request holds a copy of the voxels, and their geometry
            state = self._state(source, segmentationNode, segmentId, options.axis)
            corrected = self._corrected(state, source, options.axis) if update else None
            return state, corrected, self._prepare(source, segmentationNode, state, options, update)

        state, corrected, prepared = self._onAlignedSource(segmentationNode, read)
        self._run = {"segmentId": segmentId, "axis": options.axis, "sliceRange": options.sliceRange,
                     "original": state.mask, "grid": prepared.request.target.geometry,
                     "segmentationNode": segmentationNode, "state": state, "update": corrected,
                     "drawn": [] if options.prompt == PROMPT_OTHER and not update else state.drawn}
        self._discard = False
        self.monitor.start(prepared.request, prepared.sources, engine=options.engine, update=corrected)
        self._watchScene(segmentationNode.GetScene())

    def _corrected(self, state, source, axis):
        """The slices to update around: those changed since the last result, else the slice in view (accepted)."""
        from KnowledgeSAMLib import mrml

        if not state.record.written:
            raise ValueError("Update works on a result of this effect: press Preview, then Apply, first.")
        corrected = mrml.corrected_slices([state])
        if corrected:
            return corrected
        index = self._viewSlice(source, axis)
        if index is None:
            raise ValueError("Nothing changed since the last result: correct a slice (or mark one absent), then "
                             "Update.")
        if index in state.labelled and index not in state.absent:
            state.drawn = sorted(set(state.drawn) | {index})  # checked and left as it is: it is yours now
        return [index]

    def _viewSlice(self, source, axis):
        return None if self._sliceInView is None else int(self._sliceInView(source, axis))

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

    def _prepare(self, source, segmentationNode, state, options, update):
        """The segment's own slices (the annotator's: see ``mrml.loop``) as the prompt, propagating for an update;
        or another volume's segment. Slices marked absent reach the request either way."""
        from KnowledgeSAMLib import mrml

        if update or options.prompt == PROMPT_SELF:
            return mrml.prepare_update(source, segmentationNode, [state], options.axis, roi_node=options.roiNode,
                                       mode="propagate" if update else options.mode, device=options.device,
                                       slice_range=options.sliceRange)
        if options.referenceVolume is None or options.referenceSegmentation is None or not options.referenceSegmentId:
            raise ValueError("Choose a reference volume, segmentation and segment.")
        return self._logicInstance().prepare(source, options.referenceVolume, options.referenceSegmentation,
                                             [options.referenceSegmentId], axis=options.axis, mode=options.mode,
                                             device=options.device, sliceRange=options.sliceRange,
                                             roiNode=options.roiNode, absent_slices=state.absent or None)

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
            if self._run["update"] is not None:
                self._finishUpdate(job)
            else:
                self._showResult(job)
        finally:
            self._discard = False
            self.view.refresh()

    def _outcome(self, job, use):
        """``use(result)``; a cancel or an error is one status line and changes nothing."""
        from KnowledgeSAMLib.errors import CancelledError, KnowledgeSAMError

        try:
            result = job.result()
            use(result)
        except CancelledError:
            self.clear()
            self.view.setStatus("Cancelled; nothing was changed.")
            return None
        except Exception as error:
            self.clear()
            self.view.setStatus(str(error), error=True)
            if not isinstance(error, (KnowledgeSAMError, ValueError)):
                logging.error("".join(traceback.format_exception(type(error), error, error.__traceback__)))
            elif getattr(error, "details", ""):
                logging.error(error.details)
            return None
        return result

    def _showResult(self, job):
        from KnowledgeSAMLib import mrml

        def show(result):
            self.previewMask = self._combine(result)
            self._run["confidence"] = self._confidence(result)
            self._showPreview()

        result = self._outcome(job, show)
        if result is not None:
            self.view.setStatus(mrml.warning_text(result.provenance) +
                                "Preview ready ({seconds:.1f} s on {device}). Apply writes it into the segment.".format(
                seconds=job.elapsed_seconds, device=(result.provenance or {}).get("device", "?")))

    @staticmethod
    def _confidence(result):
        labels = result.labels
        return (result.confidence or {}).get(labels.segments[0].name) if labels.segments else None

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

    # ------------------------------------------------------------------ update: written when done

    def _finishUpdate(self, job):
        from KnowledgeSAMLib import mrml

        result = self._outcome(job, self._writeUpdate)
        if result is None:
            return
        slab = result.provenance["update"]["slab"]
        corrected = self._run["update"]
        self.clear()
        self.view.setStatus(mrml.warning_text(result.provenance) +
                            "Updated slices {start}..{last} around slice(s) {corrected} in {seconds:.1f} s; your "
                            "slices were kept as drawn. Undo reverts it.".format(
                                start=slab[0], last=slab[1] - 1, corrected=", ".join(map(str, corrected)),
                                seconds=job.elapsed_seconds))

    def _writeUpdate(self, result):
        """Write the slab only (remove, then add, within its extent: one undo step), if the segment is still as
        it was when the update started; then leave the new record."""
        import numpy as np

        from KnowledgeSAMLib import mrml

        run = self._run
        if self.editor.parameterSetNode().GetSelectedSegmentID() != run["segmentId"]:
            raise ValueError("The selected segment changed during the update; nothing was written. Press Update "
                             "again.")
        now = self._onAlignedSource(run["segmentationNode"], lambda source: self._state(
            source, run["segmentationNode"], run["segmentId"], run["axis"]).mask)
        if not np.array_equal(now, run["original"]):
            raise ValueError("The segment was edited during the update; nothing was written. Press Update again.")
        labels = result.labels
        mask = labels.mask(labels.segments[0])
        modifier = self._modifierFromMask(mask)
        everything = self._modifierFromMask(np.ones_like(mask))
        extent = mrml.slab_extent(mask.shape, run["grid"], run["axis"], result.provenance["update"]["slab"])
        offset = modifier.GetExtent()[0::2]  # the modifier's grid is the mask's, its extent need not start at 0
        extent = [value + offset[index // 2] for index, value in enumerate(extent)]
        self.editor.saveStateForUndo()
        self.editor.removeFromSelectedSegment(everything, extent)
        self.editor.addToSelectedSegment(modifier, extent)
        self._record(self._confidence(result))

    # ------------------------------------------------------------------ absent slices, confidence, next slice

    def _withState(self, options, work):
        """``work(state, source, segmentationNode)`` for the selected segment; a refusal is one status line."""
        try:
            segmentationNode, segmentId = self._selection()
            return self._onAlignedSource(segmentationNode, lambda source: work(
                self._state(source, segmentationNode, segmentId, options.axis), source, segmentationNode))
        except Exception as error:
            self._refusal(error)
            return None
        finally:
            self.view.refresh()

    def markAbsent(self, options, index=None):
        """Mark slice ``index`` (default: the slice in view) "structure absent" for the selected segment: the next
        Preview or Update keeps it empty and stops propagation there. Returns the segment's absent slices."""
        from KnowledgeSAMLib import mrml

        def mark(state, source, segmentationNode):
            k = index if index is not None else self._viewSlice(source, options.axis)
            if k is None:
                raise ValueError("No slice view shows the {axis} plane.".format(axis=options.axis))
            absent = mrml.mark_absent(segmentationNode, state, [int(k)])
            self.view.setStatus("Slice {k}: '{name}' marked absent ({count} slice(s)); Update applies it.".format(
                k=k, name=state.name, count=len(absent)))
            return absent

        return self._withState(options, mark)

    def clearAbsent(self, options):
        """Forget the selected segment's absent marks."""
        from KnowledgeSAMLib import mrml

        def clear(state, source, segmentationNode):
            mrml.clear_absent(segmentationNode, state)
            self.view.setStatus("No slice is marked absent for '{name}' any more.".format(name=state.name))
            return True

        return self._withState(options, clear)

    def nextSliceToCheck(self, options):
        """Show the slice of the last result where a correction fixes most (not yours, not absent); returns its index."""
        from KnowledgeSAMLib import mrml

        def jump(state, source, segmentationNode):
            found = mrml.slice_to_check([state])
            if found is None:
                self.view.setStatus("No slice to check: apply a result first (or every slice is yours).")
                return None
            name, k, confidence = found
            if self._jumpToSlice is not None:
                self._jumpToSlice(source, options.axis, k)
            self.view.setStatus("Slice {k}: the most of '{name}' likely wrong around it (confidence {c:.2f}): "
                                "correct it if needed, then Update.".format(k=k, name=name, c=confidence))
            return k

        return self._withState(options, jump)

    def showSlice(self, options, index):
        """Show slice ``index`` in the view of the options' axis (a row of the confidence list was chosen)."""
        return self._withState(options, lambda state, source, node: self._jumpToSlice(source, options.axis, index)
                               if self._jumpToSlice is not None else None)

    def sliceRows(self, axis):
        """``(slice, text)`` for the selected segment's list, from its record (cheap: no voxels are read): your
        slices, absent ones, and the last result's confidence."""
        from KnowledgeSAMLib import mrml

        node = self.editor.parameterSetNode()
        segmentationNode = node.GetSegmentationNode() if node is not None else None
        segment = (segmentationNode.GetSegmentation().GetSegment(node.GetSelectedSegmentID() or "")
                   if segmentationNode is not None else None)
        record = mrml.read_record(segment) if segment is not None else None
        if record is None or record.axis != axis:
            return []
        rows = []
        for k in sorted(set(record.confidence) | set(record.drawn) | set(record.absent)):
            if k in record.absent:
                text = "absent"
            elif k in record.drawn:
                text = "yours"
            else:
                text = "{c:.2f}".format(c=record.confidence[k])
            rows.append((k, "slice {k}: {text}".format(k=k, text=text)))
        return rows

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
        self._record(self._run.get("confidence"))
        self.view.setStatus("Applied. Undo reverts it. Correct any slice, then Update.")
        self.clear()
        self.view.refresh()
        return True

    def _record(self, confidence):
        """Leave the record the next Update compares with (the segment as the editor wrote it)."""
        from KnowledgeSAMLib import mrml

        run = self._run
        state = run["state"]
        partial = run["update"] is not None or run["sliceRange"] is not None  # elsewhere the last confidence holds
        written = {run["segmentId"]: {"drawn": run["drawn"], "absent": state.absent, "confidence": confidence,
                                      "previous": state.record if partial and state.record.written else None}}
        self._onAlignedSource(run["segmentationNode"], lambda source: mrml.record_written(
            run["segmentationNode"], source, run["axis"], written))

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
