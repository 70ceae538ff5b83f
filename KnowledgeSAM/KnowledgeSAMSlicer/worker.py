"""Following an inference run from Slicer's main thread: one inference process per session, one monitor per
front-end (the module panel, the Segment Editor effect).

Why a process (``KnowledgeSAMLib.mrml.WorkerProcess``) and not a thread: Slicer's main thread keeps Python's
GIL while Qt waits for events, so a Python thread would only run between timer ticks (the run then takes many
times longer). The process has its own GIL, keeps the model loaded between runs, and a crash there leaves
Slicer and its scene as they were. This module is Qt-free except for the default timer: the monitor polls the
job from a ``qt.QTimer`` and does every MRML and Qt update on the main thread.
"""

import shutil
import sys

__all__ = ["JobMonitor", "sharedWorker", "pythonExecutable", "POLL_INTERVAL_MS"]

POLL_INTERVAL_MS = 150


def pythonExecutable():
    """The interpreter that runs the inference process: Slicer's own Python (``PythonSlicer``, or the
    ``python-real`` it launches, both on Slicer's PATH), else this process's interpreter (plain Python)."""
    for name in ("PythonSlicer", "python-real"):
        found = shutil.which(name)
        if found:
            return found
    return sys.executable


class JobMonitor:
    """Submits a run to the shared inference process and follows it from the main thread: a timer polls the
    job, a progress bar shows it (busy until the engine reports a total), and ``finished(job)`` is called once,
    on the main thread, when it is done (``job.result()`` then returns or re-raises).

    ``timer`` is a ``qt.QTimer`` (made here when not given; tests pass a stand-in); ``worker`` the
    ``WorkerProcess`` (default: the session's shared one)."""

    def __init__(self, progressBar, finished, timer=None, worker=None):
        if timer is None:
            import qt

            timer = qt.QTimer()
        self._bar = progressBar
        self._finished = finished
        self._timer = timer
        self._worker = worker
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.poll)
        self.job = None
        self.discard = False  # the run's result is not wanted any more (scene closed, module left)

    @property
    def busy(self):
        return self.job is not None

    def start(self, request, sources=None, model=None, samCheckpoint=None, engine=None, update=None):
        """Send ``request`` (a ``SegmentRequest``) to the inference process; returns the job. ``update``: the
        corrected slices of an annotator's update (only their slab is segmented, by the process's Segmenter that
        already holds the volume's embeddings)."""
        worker = self._worker or sharedWorker()
        self.discard = False
        self.job = worker.submit(request, sources, model=model, sam_checkpoint=samCheckpoint, engine=engine,
                                 update=update)
        self._bar.setVisible(True)
        self._bar.setRange(0, 0)
        self._timer.start()
        return self.job

    def cancel(self, discard=False):
        """Ask the run to stop after its current batch; ``discard``: whatever it returns is thrown away."""
        if self.job is not None:
            self.discard = self.discard or discard
            self.job.cancel()

    def poll(self):
        job = self.job
        if job is None:
            self._timer.stop()
            return
        done, total = job.progress()
        if total > 0:
            self._bar.setRange(0, total)
            self._bar.setValue(done)
        if not job.done():
            return
        self._timer.stop()
        self.job = None
        self._bar.setVisible(False)
        self._finished(job)

    def stop(self):
        """Cancel a running job (its result is discarded) and stop polling: the front-end is going away."""
        self.cancel(discard=True)
        self._timer.stop()


_worker = None


def sharedWorker():
    """The session's inference process handle (the process starts with the first run)."""
    global _worker
    if _worker is None:
        import atexit

        from KnowledgeSAMLib.mrml import WorkerProcess

        _worker = WorkerProcess(python=pythonExecutable())
        atexit.register(_worker.stop)
    return _worker
