"""One persistent inference thread, shared by the module panel and the Segment Editor effect.

Why one thread for the whole session: cuDNN keeps its plans per thread, so a fresh thread per run pays
the first-convolution cost again (nnInteractive measured ~10x). Why Qt-free: the widget polls
:meth:`Job.progress` / :meth:`Job.done` from a ``qt.QTimer`` on the main thread and does every MRML
and Qt update there; the worker only runs pure-Python work (the engine, model loading).

:class:`JobMonitor` is the main-thread side the panel and the effect share: it submits the work with a
cancel token, shows its progress in a progress bar and hands the finished job back. (The loaded model is
kept by the library: ``KnowledgeSAMLib.mrml.shared_models()``.)
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Job", "InferenceWorker", "JobMonitor", "sharedWorker"]

POLL_INTERVAL_MS = 150


class _Progress:
    """Latest ``(done, total)`` reported by the worker; read from the main thread."""

    def __init__(self):
        self._lock = threading.Lock()
        self._value = (0, 0)

    def __call__(self, done, total):
        with self._lock:
            self._value = (int(done), int(total))

    def get(self):
        with self._lock:
            return self._value


class Job:
    """A submitted unit of work: its future, progress, cancel token and timing."""

    def __init__(self, future, progress, cancelToken):
        self.future = future
        self._progress = progress
        self.cancelToken = cancelToken
        self.started = time.perf_counter()

    def progress(self):
        return self._progress.get()

    def done(self):
        return self.future.done()

    def result(self):
        """The function's return value; re-raises its exception (call only when :meth:`done`)."""
        return self.future.result()

    def cancel(self):
        """Ask the running work to stop at its next check (the engine checks between batches)."""
        if self.cancelToken is not None:
            self.cancelToken.cancel()

    @property
    def cancelled(self):
        return self.cancelToken is not None and self.cancelToken.cancelled

    @property
    def elapsedSeconds(self):
        return time.perf_counter() - self.started


class InferenceWorker:
    """Runs submitted functions one at a time on a single, long-lived thread."""

    def __init__(self):
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="KnowledgeSAM-inference")
        self._current = None

    @property
    def busy(self):
        return self._current is not None and not self._current.done()

    def submit(self, function, cancelToken=None):
        """Run ``function(progress, cancel)`` on the worker thread; returns a :class:`Job`.

        ``progress(done, total)`` may be called from the worker; ``cancel`` is ``cancelToken``.
        Refuses a second job while one runs (the UI disables Apply, this is the safety net)."""
        if self.busy:
            raise RuntimeError("KnowledgeSAM is already running a segmentation; wait or cancel it first")
        progress = _Progress()
        future = self._executor.submit(function, progress, cancelToken)
        self._current = Job(future, progress, cancelToken)
        return self._current

    def shutdown(self, wait=False):
        if self._current is not None:
            self._current.cancel()
        self._executor.shutdown(wait=wait)


class JobMonitor:
    """Runs ``work(progress, cancel)`` on the shared worker and follows it from the main thread: a timer
    polls the job, a progress bar shows it (busy until the engine reports a total), and ``finished(job)``
    is called once, on the main thread, when it is done (``job.result()`` then returns or re-raises).

    ``timer`` is a ``qt.QTimer`` (made here when not given; tests pass a stand-in)."""

    def __init__(self, progressBar, finished, timer=None):
        if timer is None:
            import qt

            timer = qt.QTimer()
        self._bar = progressBar
        self._finished = finished
        self._timer = timer
        self._timer.setInterval(POLL_INTERVAL_MS)
        self._timer.connect("timeout()", self.poll)
        self.job = None

    @property
    def busy(self):
        return self.job is not None

    def start(self, work):
        """Submit ``work`` with a new cancel token; returns the :class:`Job`."""
        from KnowledgeSAMLib.mrml import CancelToken

        self.job = sharedWorker().submit(work, CancelToken())
        self._bar.setVisible(True)
        self._bar.setRange(0, 0)
        self._timer.start()
        return self.job

    def cancel(self):
        if self.job is not None:
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
        """Cancel a running job and stop polling (module or effect going away)."""
        self.cancel()
        self._timer.stop()


_worker = None


def sharedWorker():
    """The session's single inference worker (created on first use)."""
    global _worker
    if _worker is None:
        _worker = InferenceWorker()
    return _worker
