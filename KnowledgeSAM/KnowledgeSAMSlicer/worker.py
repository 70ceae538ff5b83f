"""One persistent inference thread, shared by the module panel and the Segment Editor effect.

Why one thread for the whole session: cuDNN keeps its plans per thread, so a fresh thread per run pays
the first-convolution cost again (nnInteractive measured ~10x). Why Qt-free: the widget polls
:meth:`Job.progress` / :meth:`Job.done` from a ``qt.QTimer`` on the main thread and does every MRML
and Qt update there; the worker only runs pure-Python work (the engine, model loading).

The loaded model is cached here too (:class:`ModelCache`), so the panel and the effect share it.
"""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

__all__ = ["Job", "InferenceWorker", "ModelCache", "sharedWorker", "sharedModelCache"]


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


class ModelCache:
    """Keeps the last loaded model, keyed by what it was loaded from (and the file's change time)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._key = None
        self._model = None

    @staticmethod
    def _stamp(path):
        import os

        try:
            return os.stat(path).st_mtime_ns if path else None
        except OSError:
            return None

    def get(self, nameOrPath, samCheckpoint, loader):
        """The cached model for ``(nameOrPath, samCheckpoint)`` or ``loader(nameOrPath, samCheckpoint)``."""
        key = (str(nameOrPath), str(samCheckpoint or ""), self._stamp(nameOrPath), self._stamp(samCheckpoint))
        with self._lock:
            if self._key != key or self._model is None:
                self._model = None  # release the old model before loading a new one
                self._model = loader(nameOrPath, samCheckpoint)
                self._key = key
            return self._model

    def clear(self):
        with self._lock:
            self._key, self._model = None, None


_worker = None
_models = ModelCache()


def sharedWorker():
    """The session's single inference worker (created on first use)."""
    global _worker
    if _worker is None:
        _worker = InferenceWorker()
    return _worker


def sharedModelCache():
    return _models
