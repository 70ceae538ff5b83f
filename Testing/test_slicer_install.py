"""The "Install dependencies" flow (KnowledgeSAMSlicer/installer.py), without Slicer: one question for
everything with the CPU/GPU choice, declining is not an error, the answer survives the restart the PyTorch
extension needs (no second question), and the installers run as processes that report their output line by
line while the caller keeps going (QProcess in Slicer; here a non-blocking subprocess runner)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "KnowledgeSAM"))

from KnowledgeSAMSlicer import dependencies, installer  # noqa: E402

REQUIREMENTS = ROOT / "KnowledgeSAM" / "Resources" / "requirements.txt"
PY = sys.executable


class PumpedRunner:
    """Like QProcess: ``start`` returns at once; output and the end arrive later, here when :meth:`pump` runs
    (Qt's event loop in Slicer)."""

    def __init__(self):
        self.process, self.started = None, []

    def start(self, command, onLine, onFinished):
        self.started.append(command)
        self.onLine, self.onFinished = onLine, onFinished
        self.process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        os.set_blocking(self.process.stdout.fileno(), False)

    def pump(self):
        data = self.process.stdout.read() or b""
        for line in data.decode().splitlines():
            self.onLine(line)
        code = self.process.poll()
        if code is not None and not data:
            self.process.stdout.close()
            self.onFinished(code)
            return False
        return True

    def kill(self):
        self.process.kill()


def run_to_the_end(run, runner):
    deadline = time.monotonic() + 60
    while run.outcome is None:
        assert time.monotonic() < deadline
        runner.pump()
        time.sleep(0.01)
    return run.outcome


def test_the_plan_gpu_or_cpu_build_then_the_packages_with_slicers_packages_pinned():
    gpu = installer.planSteps(PY, ["peft>=0.10"], needTorch=True, backend="auto", constraintsPath="c.txt")
    assert [s.command[1:4] for s in gpu] == [["-m", "pip", "install"], ["-m", "light_the_torch", "install"],
                                             ["-m", "pip", "install"]]
    assert gpu[1].command[-1] == "torch" + dependencies.TORCH_REQUIREMENT and "GPU" in gpu[1].description
    assert gpu[2].command[4:] == ["-c", "c.txt", "peft>=0.10"]
    cpu = installer.planSteps(PY, [], needTorch=True, backend="cpu", haveLightTheTorch=True)
    assert len(cpu) == 1 and cpu[0].command[-1] == "--pytorch-computation-backend=cpu" and "CPU" in cpu[0].description
    assert installer.planSteps(PY, [], needTorch=False) == []
    with pytest.raises(ValueError):
        installer.planSteps(PY, [], needTorch=True, backend="rocm")


def test_the_one_question_lists_everything_and_the_restart_only_when_needed():
    text = installer.confirmationText(["peft>=0.10"], needTorch=True, needPyTorchExtension=True)
    assert "PyTorch extension" in text and "restarts once" in text and "without asking again" in text
    assert "GPU build" in text and "CPU build" in text and "peft>=0.10" in text
    assert "restart" not in installer.confirmationText(["peft>=0.10"], needTorch=True, needPyTorchExtension=False)
    assert installer.confirmationText([], needTorch=False, needPyTorchExtension=False) == ""


def test_installers_run_one_after_another_and_report_their_output():
    runner, lines, outcomes, cleaned = PumpedRunner(), [], [], []
    steps = [installer.Step("first", [PY, "-c", "print('downloading 1 of 2'); print('done one')"]),
             installer.Step("second", [PY, "-c", "print('done two')"])]
    run = installer.InstallRun(steps, runner, lines.append, outcomes.append, lambda: cleaned.append(1)).start()
    assert run.outcome is None and len(runner.started) == 1, "start returns while the first installer runs"
    outcome = run_to_the_end(run, runner)
    assert outcomes == [outcome] and not outcome.failed and outcome.message == "Dependencies installed."
    assert lines[0].startswith("Installing first (step 1 of 2)") and "done one" in lines and "done two" in lines
    assert cleaned == [1]


def test_a_failing_installer_stops_the_run_with_its_output():
    runner = PumpedRunner()
    steps = [installer.Step("broken", [PY, "-c", "import sys; print('no matching distribution'); sys.exit(3)"]),
             installer.Step("never", [PY, "-c", "print('x')"])]
    outcome = run_to_the_end(installer.InstallRun(steps, runner, lambda line: None, lambda o: None).start(), runner)
    assert outcome.failed and "exit status 3" in outcome.message and "no matching distribution" in outcome.details
    assert len(runner.started) == 1


def test_cancel_kills_the_installer_and_is_not_an_error():
    runner = PumpedRunner()
    run = installer.InstallRun([installer.Step("slow", [PY, "-c", "import time; time.sleep(60)"])], runner,
                               lambda line: None, lambda o: None).start()
    run.cancel()
    outcome = run_to_the_end(run, runner)
    assert not outcome.failed and outcome.message.startswith("Installation cancelled")


class Settings(dict):
    def value(self, key, default=""):
        return self.get(key, default)

    def setValue(self, key, value):
        self[key] = value

    def remove(self, key):
        self.pop(key, None)


@pytest.fixture()
def requirements(tmp_path):
    path = tmp_path / "requirements.txt"
    path.write_text("numpy>=1.0\nsurely-not-installed-package-xyz>=1\n")
    return path


def test_declining_is_not_an_error_and_installs_nothing(requirements):
    outcomes, settings, runner = [], Settings(), PumpedRunner()
    assert installer.startInstall(requirements, print, outcomes.append, ask=lambda text, torch: None,
                                  runner=runner, settings=settings, torchMissing=False) is None
    assert not outcomes[0].failed and outcomes[0].message.startswith("Nothing was installed")
    assert runner.started == [] and settings == {}


def test_nothing_missing_asks_nothing():
    asked, outcomes = [], []
    installer.startInstall(REQUIREMENTS, print, outcomes.append, ask=lambda *a: asked.append(a), torchMissing=False,
                           settings=Settings())
    assert asked == [] and outcomes[0].message == "All dependencies are installed."


def test_one_question_across_the_restart_the_pytorch_extension_needs(requirements, monkeypatch):
    asked, outcomes, settings, installs = [], [], Settings(), []
    monkeypatch.setattr(dependencies, "pyTorchExtensionInstalled", lambda: False)

    def ask(text, needTorch):
        asked.append(needTorch)
        return "cpu"

    def installExtension():
        installs.append(1)
        return installer.Outcome(False, "restarting", restartRequired=True)

    assert installer.startInstall(requirements, print, outcomes.append, ask=ask, settings=settings,
                                  installExtension=installExtension, torchMissing=True) is None
    assert asked == [True] and installs == [1] and outcomes[-1].restartRequired
    assert settings[installer.SETTINGS_CONFIRMED] == "cpu", "the answer is kept for after the restart"

    monkeypatch.setattr(dependencies, "pyTorchExtensionInstalled", lambda: True)  # Slicer restarted
    runner = PumpedRunner()
    run = installer.startInstall(requirements, print, outcomes.append, ask=ask, settings=settings, runner=runner,
                                 python=PY, torchMissing=True)
    assert asked == [True], "no second question"
    assert any("--pytorch-computation-backend=cpu" in command for command in [s.command for s in run.steps])
    run.cancel()
    run_to_the_end(run, runner)
    assert installer.SETTINGS_CONFIRMED not in settings
