"""Segment in a separate process that keeps the model loaded, so that no thread of the caller is needed.

Why a process and not a thread: inside 3D Slicer the main thread keeps Python's GIL while Qt's event loop
waits (PythonQt's thread support is never enabled), so an inference *thread* only runs in the moments the
main thread executes Python; simulated, a 1.4 s run took 68 s. A child process has its own interpreter and
GIL: it runs at full speed whatever the main thread does, a crash or an out-of-memory kill there cannot take
Slicer down, and torch is never imported into Slicer's own process for a run.

Parent side, all non-blocking and on the caller's thread (:class:`WorkerProcess`, :class:`RemoteJob`): the
child is started on the first :meth:`WorkerProcess.submit`, a connection is tried on each :meth:`poll`, the
request is sent, and progress, the result or the error come back over the same authenticated pipe
(``multiprocessing.connection``: a Unix socket, or a named pipe on Windows). :meth:`RemoteJob.cancel` asks
the engine to stop after its current batch; a run that does not stop within ``kill_after_s`` has its
process killed. A child that dies gives a :class:`WorkerError` that says how, with the end of its log.

Child side (``python -m KnowledgeSAMLib.infer.worker_process ADDRESS FAMILY``): one
:class:`~.segmenter.Segmenter` on the process's model cache, so the model, the reference's encoding and the
target's embeddings stay loaded between runs; an annotator's update (``submit(..., update=[k, ...])``:
:func:`~.interactive.update_slab`) goes to that same Segmenter and re-encodes nothing. One reader thread
receives cancel requests while the main thread computes.
"""

from __future__ import annotations

import os
import queue
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from dataclasses import dataclass, field
from multiprocessing.connection import Client, Listener
from typing import Any

from ..choices import DEFAULT_MODEL
from ..errors import CancelledError, InputError, KnowledgeSAMError, WeightsError

__all__ = ["WorkerProcess", "RemoteJob", "WorkerError", "KILL_AFTER_S"]

KEY_ENV = "KNOWLEDGESAM_WORKER_KEY"
THREADS_ENV = "KNOWLEDGESAM_WORKER_THREADS"  # torch threads in the child (tests on shared machines)
KILL_AFTER_S = 20.0  # a cancelled run that has not stopped by then (e.g. while loading a model) is killed
CONNECT_TIMEOUT_S = 120.0  # a child that has not answered by then is killed
PROGRESS_EVERY_S = 0.05  # the child sends progress at most this often (and always the last step)
LOG_TAIL_LINES = 30
_ERRORS = {"input": InputError, "weights": WeightsError, "cancelled": CancelledError, "knowledgesam": KnowledgeSAMError}


class WorkerError(KnowledgeSAMError):
    """The inference process failed outside the engine's own checks, or stopped. ``details``: what it printed."""

    def __init__(self, message: str, details: str = "") -> None:
        super().__init__(message)
        self.details = details


@dataclass
class RemoteJob:
    """One run in the worker process, followed from the caller's thread (every query polls the pipe)."""

    worker: "WorkerProcess"
    job_id: int
    payload: dict[str, Any] | None
    started: float = field(default_factory=time.perf_counter)
    cancel_requested_at: float | None = None
    _progress: tuple[int, int] = (0, 0)
    _outcome: tuple[str, Any] | None = None

    def progress(self) -> tuple[int, int]:
        self.worker.poll()
        return self._progress

    def done(self) -> bool:
        self.worker.poll()
        return self._outcome is not None

    def result(self):
        """The :class:`SegmentationResult`; re-raises the run's error (call only when :meth:`done`)."""
        if self._outcome is None:
            raise RuntimeError("the KnowledgeSAM job has not finished yet")
        kind, value = self._outcome
        if kind == "error":
            raise value
        return value

    def cancel(self) -> None:
        """Ask the run to stop after its current batch (the process is killed if it has not by ``kill_after_s``)."""
        if self._outcome is None and self.cancel_requested_at is None:
            self.cancel_requested_at = time.perf_counter()
            self.worker._cancel(self)

    @property
    def cancelled(self) -> bool:
        return self.cancel_requested_at is not None

    @property
    def elapsed_seconds(self) -> float:
        return time.perf_counter() - self.started

    def _finish(self, kind: str, value: Any) -> None:
        if self._outcome is None:
            self._outcome = (kind, value)


def _child_env(extra: dict[str, str] | None, key: bytes) -> dict[str, str]:
    """The parent's environment, its import path (so the child imports what the parent can) and the key."""
    env = dict(os.environ)
    paths = [p for p in sys.path if p and os.path.isdir(p)]
    if env.get("PYTHONPATH"):
        paths.append(env["PYTHONPATH"])
    env["PYTHONPATH"] = os.pathsep.join(dict.fromkeys(paths))
    env["PYTHONUNBUFFERED"] = "1"
    env[KEY_ENV] = key.hex()
    env.update(extra or {})
    return env


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "it stopped answering"
    if code < 0:
        import signal

        try:
            name = signal.Signals(-code).name
        except ValueError:
            name = f"signal {-code}"
        hint = "; often: out of memory" if name == "SIGKILL" else ""
        return f"killed by {name}{hint}"
    return f"exit status {code}"


class WorkerProcess:
    """The parent's handle on one inference process (started on first use, restarted after a crash).

    ``python``: the interpreter to run (Slicer: PythonSlicer; default: this one); ``env``: extra environment
    variables for the child. Use from one thread; one job at a time."""

    def __init__(self, python: str | None = None, env: dict[str, str] | None = None,
                 kill_after_s: float = KILL_AFTER_S, connect_timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        self.python = python or sys.executable
        self.env = dict(env or {})
        self.kill_after_s = kill_after_s
        self.connect_timeout_s = connect_timeout_s
        self._proc: subprocess.Popen | None = None
        self._conn = None
        self._folder: str | None = None
        self._address = ""
        self._family = ""
        self._key = b""
        self._launched = 0.0
        self._job: RemoteJob | None = None
        self._next_id = 1
        self.starts = 0  # how many processes were started (tests: the model stays loaded in one)

    # ------------------------------------------------------------------ public

    @property
    def busy(self) -> bool:
        return self._job is not None and self._job._outcome is None

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None and self._proc.poll() is None else None

    def submit(self, request, sources=None, model: Any = DEFAULT_MODEL, sam_checkpoint: Any = None,
               engine: Any = None, update: Any = None) -> RemoteJob:
        """Send one run to the process (started now if needed); returns at once with its :class:`RemoteJob`.

        ``model``/``sam_checkpoint`` as for :class:`~.segmenter.Segmenter` (a name, a folder, or a picklable
        model); ``engine``: a picklable stand-in for the engine (a module-level function), a test seam;
        ``update``: the corrected slice(s) of an annotator's update — only their slab is segmented
        (:func:`~.interactive.update_slab`; the request holds the annotator's slices and the earlier result)."""
        self.poll()  # a job nobody followed to its end (e.g. its front-end went away) may be over by now
        if self.busy:
            raise WorkerError("KnowledgeSAM is already running a segmentation (in the module panel or the Segment "
                              "Editor effect); wait for it, or cancel it first")
        payload = {"request": request, "sources": sources, "model": DEFAULT_MODEL if model is None else model,
                   "sam_checkpoint": None if sam_checkpoint is None else str(sam_checkpoint), "engine": engine,
                   "update": None if update is None else [int(k) for k in update]}
        self._job = RemoteJob(self, self._next_id, payload)
        self._next_id += 1
        if self._proc is None or self._proc.poll() is not None:
            self._launch()
        self.poll()
        return self._job

    def poll(self) -> None:
        """Connect, send, receive: whatever can be done now without waiting."""
        if self._proc is None:
            return
        try:
            if self._conn is None:
                self._try_connect()
            if self._conn is not None:
                self._send_pending()
                self._receive()
        except (EOFError, OSError):
            self._lost()
            return
        self._watch()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Cancel any run and end the process (it exits when told; killed if it has not by ``timeout_s``)."""
        if self._job is not None:
            self._job._finish("error", CancelledError("segmentation was cancelled; nothing was written"))
        if self._conn is not None:
            try:
                self._conn.send(("stop",))
            except (OSError, EOFError, ValueError):
                pass
        if self._proc is not None:
            try:
                self._proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()

    def kill(self) -> None:
        """End the process now (a running job ends with a CancelledError or a WorkerError)."""
        if self._proc is not None and self._proc.poll() is None:
            self._proc.kill()
            try:
                self._proc.wait(timeout=10)
            except subprocess.TimeoutExpired:  # pragma: no cover - the OS did not reap it
                pass

    # ------------------------------------------------------------------ process

    def _launch(self) -> None:
        self._close()
        self._folder = tempfile.mkdtemp(prefix="ksam-worker-")
        if sys.platform == "win32":
            import secrets

            self._family, self._address = "AF_PIPE", rf"\\.\pipe\knowledgesam-{os.getpid()}-{secrets.token_hex(8)}"
        else:
            self._family, self._address = "AF_UNIX", os.path.join(self._folder, "worker.sock")
        self._key = os.urandom(32)
        log = open(os.path.join(self._folder, "worker.log"), "wb")
        flags = getattr(subprocess, "CREATE_NO_WINDOW", 0)
        try:
            self._proc = subprocess.Popen(
                [self.python, "-m", __name__, self._address, self._family], stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env=_child_env(self.env, self._key), creationflags=flags)
        except OSError as error:
            self._close()
            raise WorkerError(f"could not start the inference process ({self.python}): {error}") from None
        finally:
            log.close()
        self._launched = time.perf_counter()
        self.starts += 1

    def _try_connect(self) -> None:
        try:
            self._conn = Client(self._address, family=self._family, authkey=self._key)
        except (FileNotFoundError, ConnectionRefusedError):
            return  # not listening yet: try again at the next poll
        except OSError as error:
            if getattr(error, "winerror", None) in (2, 231):  # pipe not created yet / busy
                return
            raise

    def _send_pending(self) -> None:
        job = self._job
        if job is None or job.payload is None or job._outcome is not None:
            return
        payload, job.payload = job.payload, None
        if job.cancelled:
            job._finish("error", CancelledError("segmentation was cancelled; nothing was written"))
            return
        self._conn.send(("run", job.job_id, payload))

    def _receive(self) -> None:
        while self._conn is not None and self._conn.poll(0):
            message = self._conn.recv()
            job = self._job
            if job is None or message[1] != job.job_id:
                continue  # a late message of a job given up on
            if message[0] == "progress":
                job._progress = (int(message[2]), int(message[3]))
            elif message[0] == "result":
                job._finish("result", message[2])
            elif message[0] == "error":
                job._finish("error", self._error(*message[2:]))

    @staticmethod
    def _error(kind: str, text: str, details: str) -> Exception:
        if kind in _ERRORS:
            return _ERRORS[kind](text)
        return WorkerError(f"segmentation failed in the inference process: {text}", details)

    def _watch(self) -> None:
        """A dead child, one that never connects, or a cancel that is not honoured in time."""
        job = self._job
        if self._proc is not None and self._proc.poll() is not None:
            self._lost()
        elif self._conn is None and time.perf_counter() - self._launched > self.connect_timeout_s:
            self.kill()
            self._lost(f"it did not start within {self.connect_timeout_s:.0f} s")
        elif (job is not None and job._outcome is None and job.cancel_requested_at is not None
              and time.perf_counter() - job.cancel_requested_at > self.kill_after_s):
            self.kill()
            job._finish("error", CancelledError(
                "segmentation was cancelled (the inference process was stopped); nothing was written"))
            self._close()

    def _lost(self, how: str | None = None) -> None:
        """The child is gone: the running job fails with a message that says how; the next run starts anew."""
        code = None
        if self._proc is not None:
            try:
                code = self._proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.kill()
        job = self._job
        if job is not None and job._outcome is None:
            if job.cancelled:
                job._finish("error", CancelledError("segmentation was cancelled; nothing was written"))
            else:
                job._finish("error", WorkerError(
                    f"The KnowledgeSAM inference process stopped unexpectedly ({how or _describe_exit(code)}); "
                    "nothing was changed. The next run starts a new one.",
                    self._log_tail() or f"The inference process ({self.python}) printed nothing before it stopped."))
        self._close()

    def _log_tail(self) -> str:
        if not self._folder:
            return ""
        try:
            with open(os.path.join(self._folder, "worker.log"), encoding="utf-8", errors="replace") as handle:
                return "".join(handle.readlines()[-LOG_TAIL_LINES:])
        except OSError:
            return ""

    def _cancel(self, job: RemoteJob) -> None:
        if self._conn is not None and job.payload is None:
            try:
                self._conn.send(("cancel", job.job_id))
            except (OSError, EOFError, ValueError):
                self._lost()

    def _close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except OSError:
                pass
        self._conn = None
        if self._proc is not None and self._proc.poll() is None:
            self.kill()
        self._proc = None
        if self._folder:
            shutil.rmtree(self._folder, ignore_errors=True)
        self._folder = None


# ---------------------------------------------------------------------------------------------- child


class _Server:
    """The child: runs requests one at a time on its main thread; a reader thread takes cancel requests."""

    def __init__(self, conn) -> None:
        self.conn = conn
        self.jobs: queue.Queue = queue.Queue()
        self.lock = threading.Lock()
        self.current: tuple[int, Any] | None = None  # (job id, CancelToken)
        self.cancelled: set[int] = set()
        self.segmenter = None

    def read(self) -> None:
        """Reader thread: a lost parent ends the process at once (there is nobody to report to)."""
        while True:
            try:
                message = self.conn.recv()
            except (EOFError, OSError):
                os._exit(0)
            if message[0] == "stop":
                os._exit(0)  # nothing to save: results only exist to be sent
            if message[0] == "cancel":
                with self.lock:
                    self.cancelled.add(message[1])
                    if self.current is not None and self.current[0] == message[1]:
                        self.current[1].cancel()
            else:
                self.jobs.put(message)

    def serve(self) -> None:
        threading.Thread(target=self.read, name="KnowledgeSAM-worker-reader", daemon=True).start()
        while True:
            message = self.jobs.get()
            if message[0] == "run":
                self.run(message[1], message[2])

    def _segmenter(self, payload: dict):
        from .segmenter import Segmenter, shared_models

        if self.segmenter is None or self.segmenter.engine is not payload["engine"]:
            self.segmenter = Segmenter(payload["model"], payload["sam_checkpoint"], engine=payload["engine"],
                                       models=shared_models())
        else:
            self.segmenter.use_model(payload["model"], payload["sam_checkpoint"])
        return self.segmenter

    def _progress(self, job_id: int):
        last = [0.0]

        def report(done: int, total: int) -> None:
            now = time.perf_counter()
            if done >= total or now - last[0] >= PROGRESS_EVERY_S:
                last[0] = now
                self.conn.send(("progress", job_id, int(done), int(total)))

        return report

    def _compute(self, payload: dict, progress, token):
        """A run, or an update of the slab around corrected slices, on this process's one Segmenter."""
        segmenter = self._segmenter(payload)
        if payload.get("update") is None:
            return segmenter.segment(payload["request"], progress, token, payload["sources"])
        from .interactive import update_slab

        return update_slab(lambda request: segmenter.segment(request, progress, token, payload["sources"]),
                           payload["request"], payload["update"])

    def run(self, job_id: int, payload: dict) -> None:
        from .cancel import CancelToken

        token = CancelToken()
        with self.lock:
            self.current = (job_id, token)
            if job_id in self.cancelled:
                token.cancel()
        try:
            _set_threads()
            result = self._compute(payload, self._progress(job_id), token)
            reply = ("result", job_id, result)
        except BaseException as error:  # everything is reported; the process keeps serving
            reply = ("error", job_id) + _classify(error)
        finally:
            with self.lock:
                self.current = None
        try:
            self.conn.send(reply)
        except (OSError, EOFError):
            os._exit(0)
        except Exception as error:  # e.g. a result that cannot be pickled
            self.conn.send(("error", job_id) + _classify(error))


def _classify(error: BaseException) -> tuple[str, str, str]:
    for kind, cls in (("cancelled", CancelledError), ("input", InputError), ("weights", WeightsError),
                      ("knowledgesam", KnowledgeSAMError)):
        if isinstance(error, cls):
            return kind, str(error), ""
    text = f"{type(error).__name__}: {error}"
    return "unexpected", text, "".join(traceback.format_exception(type(error), error, error.__traceback__))


def _set_threads() -> None:
    threads = os.environ.get(THREADS_ENV)
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def main(argv: list[str]) -> int:
    """Listen on ``argv[1]`` (family ``argv[2]``), accept the parent, serve until told to stop or orphaned."""
    address, family = argv[1], argv[2]
    key = bytes.fromhex(os.environ.pop(KEY_ENV))
    watchdog = threading.Timer(CONNECT_TIMEOUT_S, os._exit, (3,))  # the parent never came
    watchdog.daemon = True
    watchdog.start()
    with Listener(address, family=family, authkey=key) as listener:
        conn = listener.accept()
    watchdog.cancel()
    _Server(conn).serve()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
