"""The "Install dependencies" action: one confirmation (with the CPU/GPU choice), then every installer runs as
a separate process while Slicer stays responsive, its output shown as it comes.

Rules (installing PyTorch is the first cause of failure of AI extensions, SLICER_CONVENTIONS.md §4):

* nothing is installed at import, in ``setup()`` or without the user's click; declining is not an error;
* one question for everything: what will be installed, and whether PyTorch should be the GPU build (the one
  that matches the NVIDIA driver, chosen by light-the-torch as the PyTorch extension does) or the CPU build;
* PyTorch needs the PyTorch extension (Slicer's usual source of torch); if it is missing it is installed
  without Slicer's own "install?" and "restart?" questions (the user already answered ours) and Slicer
  restarts once; the answer is remembered, so pressing the button again after the restart continues without
  asking again;
* PyTorch (``python -m light_the_torch install torch``) and the other packages (``python -m pip install``,
  with a constraints file that pins Slicer's own numpy, SimpleITK, VTK, requests and torch) run one after the
  other as processes of Slicer's Python, so the UI never freezes and pip's output appears line by line.

The plan (:func:`planSteps`, :func:`confirmationText`) and the run (:class:`InstallRun`, through any process
runner) are Qt-free and tested with plain pytest; :class:`QtProcessRunner` and :func:`startInstall` are the
Slicer side.
"""

import os
import tempfile
from dataclasses import dataclass

from KnowledgeSAMSlicer import dependencies

__all__ = ["Step", "Outcome", "planSteps", "confirmationText", "missingDependencies", "InstallRun",
           "QtProcessRunner", "startInstall", "SETTINGS_CONFIRMED", "BACKENDS", "LIGHT_THE_TORCH"]

SETTINGS_CONFIRMED = "KnowledgeSAM/InstallConfirmed"  # the user's answer, kept across the restart
BACKENDS = ("auto", "cpu")  # light-the-torch picks the CUDA build for the driver; or the CPU build
LIGHT_THE_TORCH = "light-the-torch>=0.7"


@dataclass(frozen=True)
class Step:
    """One installer process: what it does (for the user) and its command line."""

    description: str
    command: list


@dataclass(frozen=True)
class Outcome:
    """How an installation ended; ``failed`` is False for success and for a decline (not an error)."""

    failed: bool
    message: str
    details: str = ""
    restartRequired: bool = False


def missingDependencies(requirementsPath):
    """What the panel lists as missing: torch first (it comes through the PyTorch extension), then packages."""
    missing = dependencies.missingRequirements(dependencies.readRequirements(requirementsPath))
    return (["torch (PyTorch)"] if dependencies.torchMissing() else []) + missing


def planSteps(python, missing, needTorch, backend="auto", constraintsPath=None, haveLightTheTorch=False):
    """The installer processes, in order (no Slicer needed). ``missing``: requirement strings; ``backend``:
    ``auto`` (GPU build if the driver allows) or ``cpu``."""
    if backend not in BACKENDS:
        raise ValueError(f"backend must be one of {BACKENDS}, not {backend!r}")
    steps = []
    if needTorch:
        if not haveLightTheTorch:
            steps.append(Step("light-the-torch (chooses the PyTorch build for your GPU driver)",
                              [python, "-m", "pip", "install", LIGHT_THE_TORCH]))
        command = [python, "-m", "light_the_torch", "install", "torch" + dependencies.TORCH_REQUIREMENT]
        if backend == "cpu":
            command.append("--pytorch-computation-backend=cpu")
        steps.append(Step("PyTorch ({} build; a download of up to a few GB)".format(
            "CPU" if backend == "cpu" else "GPU if your driver allows, else CPU"), command))
    if missing:
        command = [python, "-m", "pip", "install"] + (["-c", constraintsPath] if constraintsPath else [])
        steps.append(Step("Python packages: " + ", ".join(missing), command + list(missing)))
    return steps


def confirmationText(missing, needTorch, needPyTorchExtension):
    """The one question: everything that will be installed, and the restart if one is needed."""
    lines = []
    if needTorch and needPyTorchExtension:
        lines.append("the PyTorch extension, from the Slicer Extensions server; Slicer then restarts once (you are "
                     "asked to save unsaved work), and pressing 'Install dependencies' again finishes without "
                     "asking again")
    if needTorch:
        lines.append(f"PyTorch (torch{dependencies.TORCH_REQUIREMENT}): choose the GPU build (for an NVIDIA GPU; "
                     "light-the-torch picks the one that matches your driver, else the CPU build) or the CPU build")
    if missing:
        lines.append("Python packages: " + ", ".join(missing))
    if not lines:
        return ""
    return ("KnowledgeSAM will install:\n\n- " + "\n- ".join(lines) + "\n\nThe installers run in the background; "
            "Slicer stays usable and shows their progress. Slicer's own numpy, SimpleITK, VTK and requests are kept "
            "as they are.")


class InstallRun:
    """Runs the steps one after another through ``runner`` (``start(command, onLine, onFinished)``, ``kill()``),
    reporting ``progress(line)`` and, once, ``finished(Outcome)``."""

    def __init__(self, steps, runner, progress, finished, cleanup=None):
        self.steps = list(steps)
        self.runner = runner
        self._progress = progress
        self._finished = finished
        self._cleanup = cleanup
        self._index = -1
        self._log = []
        self.cancelled = False
        self.outcome = None

    def start(self):
        self._next()
        return self

    def cancel(self):
        if self.outcome is None:
            self.cancelled = True
            self.runner.kill()

    def _next(self):
        self._index += 1
        if self._index >= len(self.steps):
            self._end(Outcome(False, "Dependencies installed."))
            return
        step = self.steps[self._index]
        self._line(f"Installing {step.description} (step {self._index + 1} of {len(self.steps)})...")
        self.runner.start(step.command, self._line, self._stepFinished)

    def _line(self, line):
        line = line.rstrip()
        if line:
            self._log.append(line)
            self._progress(line)

    def _stepFinished(self, exitCode):
        if self.outcome is not None:
            return
        if self.cancelled:
            self._end(Outcome(False, "Installation cancelled; some packages may be installed already. Press "
                                     "'Install dependencies' to finish.", "\n".join(self._log)))
        elif exitCode != 0:
            step = self.steps[self._index]
            self._end(Outcome(True, f"Installing {step.description} failed (exit status {exitCode}). See the "
                                    "details, or the Python console.", "\n".join(self._log[-200:])))
        else:
            self._next()

    def _end(self, outcome):
        self.outcome = outcome
        if self._cleanup is not None:
            self._cleanup()
        self._finished(outcome)


class QtProcessRunner:
    """Runs a command as a ``qt.QProcess`` (asynchronous: Qt signals, no thread, no blocking)."""

    def __init__(self):
        self.process = None
        self._buffer = b""

    def start(self, command, onLine, onFinished):
        import qt

        self._onLine, self._onFinished = onLine, onFinished
        self.process = qt.QProcess()
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        self.process.connect("readyReadStandardOutput()", self._read)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._done)
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._error)
        self.process.start(command[0], list(command[1:]))

    def _read(self):
        self._buffer += bytes(self.process.readAllStandardOutput().data())
        *lines, self._buffer = self._buffer.replace(b"\r", b"\n").split(b"\n")
        for line in lines:
            self._onLine(line.decode("utf-8", "replace"))

    def _done(self, exitCode, exitStatus=None):
        self._read()
        self._onFinished(int(exitCode) if exitStatus in (None, 0) else -1)

    def _error(self, error):
        if int(error) == 0:  # FailedToStart: no finished() signal follows
            self._onLine(f"could not start {self.process.program()}")
            self._onFinished(-1)

    def kill(self):
        if self.process is not None:
            self.process.kill()


def _writeConstraints():
    handle, path = tempfile.mkstemp(prefix="KnowledgeSAM-constraints-", suffix=".txt")
    with os.fdopen(handle, "w", encoding="utf-8") as stream:
        stream.write("\n".join(dependencies.protectedConstraints()) + "\n")
    return path


def askOnce(text, needTorch):
    """The one dialog: install with the GPU build, with the CPU build, or not at all (Slicer's Qt)."""
    import qt

    import slicer

    if slicer.app.testingEnabled():
        return "auto"
    box = qt.QMessageBox(qt.QMessageBox.Question, "KnowledgeSAM dependencies", text, qt.QMessageBox.Cancel,
                         slicer.util.mainWindow())
    gpu = box.addButton("Install (GPU build)" if needTorch else "Install", qt.QMessageBox.AcceptRole)
    cpu = box.addButton("Install (CPU build)", qt.QMessageBox.AcceptRole) if needTorch else None
    box.exec_()
    clicked = box.clickedButton()
    return "auto" if clicked == gpu else "cpu" if cpu is not None and clicked == cpu else None


class _QtSettings:
    """``qt.QSettings`` with the three calls the install needs (tests pass a dict-backed stand-in)."""

    def __init__(self):
        import qt

        self._settings = qt.QSettings()

    def value(self, key, default=""):
        return self._settings.value(key, default) or default

    def setValue(self, key, value):
        self._settings.setValue(key, value)

    def remove(self, key):
        self._settings.remove(key)


def startInstall(requirementsPath, progress, finished, ask=askOnce, runner=None, settings=None, python=None,
                 installExtension=None, torchMissing=None):
    """The panel's button: ask once (or not at all, when the question was answered before a restart), then run
    the installers. Returns the running :class:`InstallRun`, or None when nothing runs (``finished`` was called:
    nothing missing, declined, or the PyTorch extension installed and Slicer restarting). The keyword arguments
    replace Slicer's parts in tests (the question, the process runner, the settings, the interpreter, the
    extension install, and whether torch is missing)."""
    from KnowledgeSAMSlicer.worker import pythonExecutable

    settings = settings if settings is not None else _QtSettings()
    missing = dependencies.missingRequirements(dependencies.readRequirements(requirementsPath))
    needTorch = dependencies.torchMissing() if torchMissing is None else torchMissing
    needExtension = needTorch and not dependencies.pyTorchExtensionInstalled()
    text = confirmationText(missing, needTorch, needExtension)
    if not text:
        finished(Outcome(False, "All dependencies are installed."))
        return None
    backend = settings.value(SETTINGS_CONFIRMED, "") or ask(text, needTorch)
    if not backend:
        finished(Outcome(False, "Nothing was installed. Press 'Install dependencies' when you want to."))
        return None
    settings.setValue(SETTINGS_CONFIRMED, backend)  # asked once, also across the restart
    if needExtension:
        finished((installExtension or dependencies.installPyTorchExtension)())
        return None
    constraints = _writeConstraints()
    steps = planSteps(python or pythonExecutable(), missing, needTorch, backend, constraints,
                      dependencies.lightTheTorchInstalled())

    def cleanup():
        os.remove(constraints)
        settings.remove(SETTINGS_CONFIRMED)

    return InstallRun(steps, runner or QtProcessRunner(), progress, finished, cleanup).start()
