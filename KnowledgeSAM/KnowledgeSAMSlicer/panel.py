"""What the module panel does, without Qt: which buttons are enabled, Apply, the finished run, Cancel, Undo,
and what happens when the scene closes or the user leaves the module during a run.

Why a presenter: the widget (KnowledgeSAM.py) only wires Qt to these methods, so the panel's behaviour is
tested on slicer-core's MRML with plain pytest. The presenter talks to the widget through a small view
(``setStatus``, ``showError``, ``refresh``) and reads the panel's parameter node (or any object with the
same fields).
"""

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
    """

    def __init__(self, logic, monitor, view, parameterNode, checkedSegmentIds, currentSliceIndex=None,
                 undoHook=None):
        self.logic = logic
        self.monitor = monitor
        self.view = view
        self._parameterNode = parameterNode
        self._checkedSegmentIds = checkedSegmentIds
        self._currentSliceIndex = currentSliceIndex
        self._undoHook = undoHook or (lambda prepared: None)
        self._prepared = None
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
        return PanelState(
            applyEnabled=not unavailableReason and ready and not busy, applyToolTip=tip, cancelEnabled=busy,
            undoEnabled=not busy and self.lastWrite is not None and not self.lastWrite.undone,
            referenceSliceEnabled=sameVolume and not busy,
            referenceSliceNumberEnabled=sameVolume and not busy and bool(p) and p.referenceSliceMode == SLICE_NUMBER,
            sliceRangeEnabled=bool(p) and p.useSliceRange and not busy, inputsEnabled=not busy)

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
            device=device, sliceRange=sliceRange, roiNode=getattr(p, "roiNode", None))

    def apply(self, device, model=None, samCheckpoint=None, engine=None):
        """Check the inputs, then start the run in the inference process; False when refused (said why)."""
        from KnowledgeSAMLib.errors import KnowledgeSAMError

        if self.busy:
            return False
        try:
            prepared = self.prepare(device)
            self.monitor.start(prepared.request, prepared.sources, model=model, samCheckpoint=samCheckpoint,
                               engine=engine)
        except (KnowledgeSAMError, ValueError) as error:
            self.view.setStatus(str(error), error=True)
            self.view.showError(str(error), getattr(error, "details", None))
            return False
        self._prepared, self._discardReason = prepared, None
        self.view.setStatus("Segmenting {target}... (Cancel stops after the current batch)".format(
            target=prepared.target_volume_node.GetName()))
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
            write = self.logic.writePrepared(prepared, result, saveStateForUndo=self._undoHook(prepared))
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

    def _written(self, write, result, job):
        self.lastWrite = write
        output = write.segmentation_node
        p = self._parameterNode()
        if p is not None and p.outputSegmentation is None:
            p.outputSegmentation = output
        output.CreateDefaultDisplayNodes()
        self.view.setStatus(
            "Done: {count} segment(s) in '{output}' in {seconds:.1f} s on {device}. They are marked 'in progress': "
            "review them before use.".format(count=len(write.segment_ids), output=output.GetName(),
                                             seconds=job.elapsed_seconds,
                                             device=(result.provenance or {}).get("device", "?")))

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
