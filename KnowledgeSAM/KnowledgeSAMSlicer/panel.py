"""What the module panel does, without Qt: which buttons are enabled, Apply, the finished run, Cancel, Undo,
and what happens when the scene closes or the user leaves the module during a run; and the annotator's loop on
the output segmentation: Update (only the slab around the slices corrected since the last run; one undo step),
"structure absent here" marks (kept in the parameter node by segment name), the per-slice confidence and the slice
to check next.

Why a presenter: the widget (KnowledgeSAM.py) only wires Qt to these methods, so the panel's behaviour is
tested on slicer-core's MRML with plain pytest. The presenter talks to the widget through a small view
(``setStatus``, ``showError``, ``refresh``) and reads the panel's parameter node (or any object with the
same fields).
"""

import json
import traceback
from dataclasses import dataclass

__all__ = ["PanelPresenter", "PanelState", "SLICE_CURRENT", "SLICE_ALL", "SLICE_NUMBER", "REFERENCE_SLICE_MODES"]

SLICE_CURRENT, SLICE_ALL, SLICE_NUMBER = "current slice in view", "all labelled slices", "slice number"
REFERENCE_SLICE_MODES = [SLICE_ALL, SLICE_CURRENT, SLICE_NUMBER]  # the first is the default (works on the sample)


def sameNode(a, b):
    """The same MRML node (compared by ID: Python wrappers of one node are not always the same object)."""
    return a is not None and b is not None and a.GetID() == b.GetID()


@dataclass(frozen=True)
class PanelState:
    """What the widget shows enabled, and the Apply button's tooltip."""

    applyEnabled: bool
    applyToolTip: str
    cancelEnabled: bool
    undoEnabled: bool
    referenceSliceEnabled: bool
    referenceSliceNumberEnabled: bool
    sliceRangeEnabled: bool
    inputsEnabled: bool
    updateEnabled: bool = False  # an output to update, on the target itself
    loopEnabled: bool = False  # absent marks, next slice: a target and segments


class PanelPresenter:
    """The panel's behaviour.

    :param logic: the module's ``KnowledgeSAMLogic`` (prepare on the main thread, write back).
    :param monitor: a ``worker.JobMonitor`` whose ``finished`` callback is :meth:`onJobFinished`.
    :param view: ``setStatus(text, error=False)``, ``showError(text, details=None)``, ``refresh()``.
    :param parameterNode: returns the parameter node (or None).
    :param checkedSegmentIds: returns the reference segments to find.
    :param currentSliceIndex: ``(volumeNode, axis) -> index`` of the slice shown in the view (Slicer's views).
    :param undoHook: ``prepared -> callable or None``: the Segment Editor's saveStateForUndo when it edits the
        output, so that Ctrl+Z also reverts the run.
    :param jumpToSlice: ``(volumeNode, axis, index)``: show that slice in the view of ``axis`` (Slicer's views).
    """

    def __init__(self, logic, monitor, view, parameterNode, checkedSegmentIds, currentSliceIndex=None,
                 undoHook=None, jumpToSlice=None):
        self.logic = logic
        self.monitor = monitor
        self.view = view
        self._parameterNode = parameterNode
        self._checkedSegmentIds = checkedSegmentIds
        self._currentSliceIndex = currentSliceIndex
        self._undoHook = undoHook or (lambda prepared: None)
        self._jumpToSlice = jumpToSlice
        self._prepared = None
        self._loop = None  # for the running job: how its result is recorded (drawn, absent, previous records)
        self._discardReason = None
        self.lastWrite = None

    # ------------------------------------------------------------------ state

    @property
    def busy(self):
        return self.monitor.busy

    def state(self, unavailableReason=None):
        p = self._parameterNode()
        busy = self.busy
        ready = bool(p and p.targetVolume and p.referenceSegmentation and self._checkedSegmentIds())
        if unavailableReason:
            tip = unavailableReason
        elif not ready:
            tip = "Choose a target volume, a reference segmentation and at least one segment."
        else:
            tip = "Segment the target volume."
        sameVolume = bool(p) and (p.referenceVolume is None or sameNode(p.referenceVolume, p.targetVolume))
        loop = not unavailableReason and not busy and bool(p and p.targetVolume and self._checkedSegmentIds())
        return PanelState(
            applyEnabled=not unavailableReason and ready and not busy, applyToolTip=tip, cancelEnabled=busy,
            undoEnabled=not busy and self.lastWrite is not None and not self.lastWrite.undone,
            referenceSliceEnabled=sameVolume and not busy,
            referenceSliceNumberEnabled=sameVolume and not busy and bool(p) and p.referenceSliceMode == SLICE_NUMBER,
            sliceRangeEnabled=bool(p) and p.useSliceRange and not busy, inputsEnabled=not busy,
            updateEnabled=loop and ready and sameVolume and p.outputSegmentation is not None, loopEnabled=loop)

    # ------------------------------------------------------------------ apply

    def _referenceSliceIndex(self, p, referenceVolume):
        if not sameNode(referenceVolume, p.targetVolume) or p.referenceSliceMode == SLICE_ALL:
            return None
        if p.referenceSliceMode == SLICE_NUMBER:
            return int(p.referenceSliceIndex)
        if self._currentSliceIndex is None:
            raise ValueError("no slice view to read the current slice from; choose 'all labelled slices'")
        return self._currentSliceIndex(referenceVolume, p.axis)

    def prepare(self, device):
        """Read and check the inputs (main thread); InputError/ValueError say what is wrong."""
        p = self._parameterNode()
        referenceVolume = p.referenceVolume or p.targetVolume
        sliceRange = (int(p.sliceRangeStart), int(p.sliceRangeStop)) if p.useSliceRange else None
        return self.logic.prepare(
            p.targetVolume, referenceVolume, p.referenceSegmentation, self._checkedSegmentIds(),
            outputSegmentationNode=p.outputSegmentation,
            referenceSliceIndex=self._referenceSliceIndex(p, referenceVolume), axis=p.axis, mode=p.mode,
            device=device, sliceRange=sliceRange, roiNode=getattr(p, "roiNode", None),
            absent_slices=self._marksFor(self._checkedNames()) or None)

    def apply(self, device, model=None, samCheckpoint=None, engine=None):
        """Check the inputs, then start the run in the inference process; False when refused (said why)."""
        return self._submit(lambda: self._applyRun(device), model, samCheckpoint, engine,
                            "Segmenting {target}... (Cancel stops after the current batch)")

    def _applyRun(self, device):
        prepared = self.prepare(device)
        drawn = self._recordableDrawn(prepared)
        return prepared, None, {"drawn": drawn, "absent": self._marksFor(self._checkedNames()), "previous": {}}

    @staticmethod
    def _recordableDrawn(prepared):
        from KnowledgeSAMLib import mrml

        return mrml.drawn_slices(prepared.request)

    def _submit(self, plan, model, samCheckpoint, engine, message):
        """``plan() -> (prepared, corrected slices or None, record plan)``, then the run in the inference process;
        False when refused (the status and a dialog say why)."""
        from KnowledgeSAMLib.errors import KnowledgeSAMError

        if self.busy:
            return False
        try:
            prepared, corrected, loop = plan()
            self.monitor.start(prepared.request, prepared.sources, model=model, samCheckpoint=samCheckpoint,
                               engine=engine, update=corrected)
        except (KnowledgeSAMError, ValueError) as error:
            self.view.setStatus(str(error), error=True)
            self.view.showError(str(error), getattr(error, "details", None))
            return False
        self._prepared, self._discardReason, self._loop = prepared, None, loop
        self.view.setStatus(message.format(target=prepared.target_volume_node.GetName(),
                                           slices=", ".join(map(str, corrected or []))))
        self.view.refresh()
        return True

    # ------------------------------------------------------------------ the finished run

    def onJobFinished(self, job):
        prepared, self._prepared = self._prepared, None
        try:
            if self._discardReason is not None or prepared is None:
                self.view.setStatus(self._discardReason or "The run's inputs are gone; nothing was written.")
                return
            self._finish(job, prepared)
        finally:
            self._discardReason = None
            self.view.refresh()

    def _finish(self, job, prepared):
        from KnowledgeSAMLib.errors import CancelledError, KnowledgeSAMError

        try:
            result = job.result()
            write = self.logic.writePrepared(prepared, result, saveStateForUndo=self._undoHook(prepared),
                                             afterWrite=self._recorder(prepared, result))
        except CancelledError:
            self.view.setStatus("Cancelled after {seconds:.1f} s; nothing was changed.".format(
                seconds=job.elapsed_seconds))
            return
        except KnowledgeSAMError as error:
            self.view.setStatus(str(error), error=True)
            self.view.showError(str(error), getattr(error, "details", None) or None)
            return
        except Exception as error:  # a bug: say so, with the traceback for a report
            message = "Segmentation failed: {error}".format(error=error)
            self.view.setStatus(message, error=True)
            self.view.showError(message, traceback.format_exc())
            return
        self._written(write, result, job)

    def _recorder(self, prepared, result):
        """What the next Update compares with: each written segment's record, written with it (one undo step)."""
        from KnowledgeSAMLib import mrml

        loop, self._loop = self._loop, None
        if loop is None:
            return None
        return mrml.recorder(result, prepared.target_volume_node, prepared.request.axis, loop["drawn"], loop["absent"],
                             loop["previous"])

    def _written(self, write, result, job):
        from KnowledgeSAMLib import mrml

        self.lastWrite = write
        output = write.segmentation_node
        p = self._parameterNode()
        if p is not None and p.outputSegmentation is None:
            p.outputSegmentation = output
        output.CreateDefaultDisplayNodes()
        update = (result.provenance or {}).get("update")
        warned = mrml.warning_text(result.provenance)
        if update:
            self.view.setStatus(warned + "Updated slices {start}..{last} of {count} segment(s) in '{output}' in "
                                "{seconds:.1f} s; your slices were kept as drawn. 'Undo last run' reverts it.".format(
                                    start=update["slab"][0], last=update["slab"][1] - 1, count=len(write.segment_ids),
                                    output=output.GetName(), seconds=job.elapsed_seconds))
            return
        self.view.setStatus(warned +
            "Done: {count} segment(s) in '{output}' in {seconds:.1f} s on {device}. They are marked 'in progress': "
            "review them before use.".format(count=len(write.segment_ids), output=output.GetName(),
                                             seconds=job.elapsed_seconds,
                                             device=(result.provenance or {}).get("device", "?")))

    # ------------------------------------------------------------------ the annotator's loop

    def _checkedNames(self):
        p = self._parameterNode()
        segmentation = p.referenceSegmentation.GetSegmentation() if p and p.referenceSegmentation else None
        if segmentation is None:
            return []
        segments = [segmentation.GetSegment(segmentId) for segmentId in self._checkedSegmentIds()]
        return [segment.GetName() for segment in segments if segment is not None]

    def _marks(self):
        """Segment name -> slices marked "structure absent" (the parameter node's JSON; bad text: none)."""
        try:
            marks = json.loads(getattr(self._parameterNode(), "absentSlices", "") or "{}")
            return {str(name): sorted({int(k) for k in ks}) for name, ks in marks.items()}
        except (ValueError, TypeError, AttributeError):
            return {}

    def _saveMarks(self, marks):
        self._parameterNode().absentSlices = json.dumps({name: ks for name, ks in sorted(marks.items()) if ks})

    def _marksFor(self, names):
        marks = self._marks()
        return {name: marks[name] for name in names if marks.get(name)}

    def _outputStates(self, p):
        """The output segments named like the checked reference segments, compared with their records."""
        from KnowledgeSAMLib import mrml

        segmentation = p.outputSegmentation.GetSegmentation()
        ids = [segmentation.GetSegmentIdBySegmentName(name) for name in self._checkedNames()]
        ids = [segmentId for segmentId in ids if segmentId]
        if not ids:
            raise ValueError("The output segmentation has none of the checked segments: press Apply first.")
        states = mrml.segment_states(p.outputSegmentation, ids, p.targetVolume, p.axis)
        marks = self._marks()
        for state in states:
            state.absent = sorted(set(state.absent) | set(marks.get(state.name, [])))
            state.drawn = [k for k in state.drawn if k not in state.absent]
        return states

    def update(self, device, model=None, samCheckpoint=None, engine=None):
        """Recompute, in the output segmentation, only the slab around the slices changed there since the last run
        (or around the slice in view, which then counts as yours); one undo step. False when refused."""
        return self._submit(lambda: self._updateRun(device), model, samCheckpoint, engine,
                            "Updating {target} around slice(s) {slices}...")

    def _updateRun(self, device):
        from KnowledgeSAMLib import mrml

        p = self._parameterNode()
        if p.outputSegmentation is None or not (p.referenceVolume is None or sameNode(p.referenceVolume,
                                                                                        p.targetVolume)):
            raise ValueError("Update works on the output of a run on the target itself: Apply first.")
        mrml.check_output_node(p.outputSegmentation, p.targetVolume)
        states = self._outputStates(p)
        if not any(state.record.written for state in states):
            raise ValueError("The output segmentation was not written by KnowledgeSAM: Apply first.")
        corrected = mrml.corrected_slices(states) or self._acceptSliceInView(p, states)
        sliceRange = (int(p.sliceRangeStart), int(p.sliceRangeStop)) if p.useSliceRange else None
        prepared = mrml.prepare_update(p.targetVolume, p.outputSegmentation, states, p.axis, device=device,
                                       slice_range=sliceRange, roi_node=getattr(p, "roiNode", None))
        drawn = sorted({k for state in states for k in state.drawn})  # a slice you touched is yours for all
        loop = {"drawn": {state.name: drawn for state in states}, "absent": {s.name: s.absent for s in states},
                "previous": {state.name: state.record for state in states if state.record.written}}
        return prepared, corrected, loop

    def _acceptSliceInView(self, p, states):
        if self._currentSliceIndex is None:
            raise ValueError("Nothing changed in the output since the last run: correct a slice (or mark one "
                             "absent), then Update.")
        index = int(self._currentSliceIndex(p.targetVolume, p.axis))
        for state in states:
            if index in state.labelled and index not in state.absent:
                state.drawn = sorted(set(state.drawn) | {index})  # checked and left as it is: yours now
        return [index]

    def markAbsent(self, index=None):
        """Mark slice ``index`` (default: the slice in view) "structure absent" for the checked segments: Apply and
        Update keep it empty and stop propagation there. Returns the marks (segment name -> slices)."""
        p = self._parameterNode()
        names = self._checkedNames()
        try:
            if not names or p.targetVolume is None:
                raise ValueError("Choose a target volume and check the segments that are absent there.")
            if index is None:
                if self._currentSliceIndex is None:
                    raise ValueError("No slice view to read the slice in view from.")
                index = self._currentSliceIndex(p.targetVolume, p.axis)
        except ValueError as error:
            self.view.setStatus(str(error), error=True)
            return None
        marks = self._marks()
        for name in names:
            marks[name] = sorted(set(marks.get(name, [])) | {int(index)})
        self._saveMarks(marks)
        self.view.setStatus("Slice {k}: {names} marked absent; Apply or Update applies it.".format(
            k=index, names=", ".join(names)))
        self.view.refresh()
        return marks

    def clearAbsent(self):
        """Forget every absent mark (and those the output's records keep, e.g. of slices erased there)."""
        from KnowledgeSAMLib import mrml

        self._saveMarks({})
        p = self._parameterNode()
        if p is not None and p.outputSegmentation is not None and p.targetVolume is not None:
            try:
                for state in self._outputStates(p):
                    mrml.clear_absent(p.outputSegmentation, state)
            except ValueError:
                pass
        self.view.setStatus("No slice is marked absent any more.")
        self.view.refresh()

    def absentText(self):
        """The absent marks, one line per segment (for the panel)."""
        marks = self._marks()
        return "; ".join("{name}: {slices}".format(name=name, slices=", ".join(map(str, ks)))
                         for name, ks in sorted(marks.items())) or "none"

    def sliceRows(self):
        """``(slice, text)`` per slice of the output's checked segments, from their records (no voxels read)."""
        from KnowledgeSAMLib import mrml

        p = self._parameterNode()
        if p is None or p.outputSegmentation is None:
            return []
        segmentation = p.outputSegmentation.GetSegmentation()
        rows = []
        for name in self._checkedNames():
            segment = segmentation.GetSegment(segmentation.GetSegmentIdBySegmentName(name) or "")
            record = mrml.read_record(segment) if segment is not None else None
            if record is None or record.axis != p.axis:
                continue
            for k, confidence in sorted(record.confidence.items()):
                if k not in record.drawn and k not in record.absent:
                    rows.append((k, "{name} slice {k}: {c:.2f}".format(name=name, k=k, c=confidence)))
        return sorted(rows, key=lambda row: (row[0], row[1]))

    def showSlice(self, index):
        p = self._parameterNode()
        if self._jumpToSlice is not None and p is not None and p.targetVolume is not None:
            self._jumpToSlice(p.targetVolume, p.axis, int(index))

    def nextSliceToCheck(self):
        """Show the slice where a correction fixes most (not yours, not absent); returns its index (None: none)."""
        from KnowledgeSAMLib import mrml
        from KnowledgeSAMLib.errors import KnowledgeSAMError

        p = self._parameterNode()
        try:
            if p is None or p.outputSegmentation is None or p.targetVolume is None:
                raise ValueError("Apply first: the output's confidence says where to look.")
            found = mrml.slice_to_check(self._outputStates(p))
        except (KnowledgeSAMError, ValueError) as error:
            self.view.setStatus(str(error), error=True)
            return None
        if found is None:
            self.view.setStatus("No slice to check: every predicted slice is yours or absent.")
            return None
        name, index, confidence = found
        self.showSlice(index)
        self.view.setStatus("Slice {k}: the most of '{name}' likely wrong around it (confidence {c:.2f}): "
                            "correct it in the output if needed, then Update.".format(k=index, name=name, c=confidence))
        return index

    # ------------------------------------------------------------------ cancel, scene close, module exit

    def cancel(self):
        if self.busy:
            self.monitor.cancel()
            self.view.setStatus("Cancelling after the current batch...")

    def _abandon(self, reason):
        """Cancel the run and write nothing when it ends (its nodes may be gone by then)."""
        if self.busy:
            self._discardReason = reason
            self.monitor.cancel(discard=True)
            self.view.setStatus(reason)

    def onSceneStartClose(self):
        self._abandon("The scene was closed during the run: it was cancelled and nothing was written.")
        self._prepared = None
        self.lastWrite = None

    def onModuleExit(self):
        self._abandon("You left the module during the run: it was cancelled and nothing was written.")

    # ------------------------------------------------------------------ undo

    def undo(self, confirm):
        """Revert the last run (``confirm(question) -> bool`` is asked when the output was edited since)."""
        if self.lastWrite is None or self.lastWrite.undone:
            return False
        if self.lastWrite.edited_since() and not confirm(
                "The output segmentation was edited after the run. Undoing the run also reverts those edits. "
                "Continue?"):
            return False
        created = self.lastWrite.created_node
        self.lastWrite.undo()
        p = self._parameterNode()
        if created and p is not None:
            p.outputSegmentation = None
        self.view.setStatus("The last run was undone.")
        self.view.refresh()
        return True
