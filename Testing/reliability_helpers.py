"""Shared pieces of the reliability suite (``test_reliability_*.py``): tiny input files, a tiny saved model,
runs of ``knowledgesam segment`` that can be paused at a named point and killed, and the checks every case
ends with — inputs byte-identical, an output pair complete and from one run.

Why forked runs: a fresh interpreter needs 6–17 s on a loaded 2-core machine just to import torch, ITK and
peft; a child forked from the test process starts at once, runs the real CLI (``main``) and dies by a real
signal. One test in ``test_reliability_kill.py`` still uses a separate interpreter, to cover the entry point.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from KnowledgeSAMLib._test_hooks import ENV_PAUSE, ENV_PAUSE_FILE
from KnowledgeSAMLib.data.io import write_image, write_labels
from KnowledgeSAMLib.infer.output import sidecar_path

from test_infer_fakes import blob_volume

ROOT = Path(__file__).resolve().parents[1]
WAIT_S = 120.0  # the longest a test waits for a child to reach its pause point (a loaded machine)


def sha256(path: str | os.PathLike) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@dataclass
class Case:
    """One folder of inputs: a target with labels drawn on it, another reference image with its labels."""

    root: Path
    target: Path
    target_labels: Path
    reference: Path
    reference_labels: Path
    model: Path

    @property
    def inputs(self) -> list[Path]:
        return [self.target, self.target_labels, self.reference, self.reference_labels]

    def fingerprints(self) -> dict[str, str]:
        return {str(path): sha256(path) for path in self.inputs}

    def anchor_argv(self, output: str | os.PathLike, *extra: str) -> list[str]:
        """Same-volume (anchor) arguments: the fastest real run."""
        return ["segment", "--quiet", "--device", "cpu", "--model", str(self.model), "--target", str(self.target),
                "--reference-labels", str(self.target_labels), "--slice", "3", "--output", str(output), *extra]


def make_case(root: Path, model_dir: Path) -> Case:
    root.mkdir(parents=True, exist_ok=True)
    image, labels = blob_volume(shape=(6, 32, 32))
    other, other_labels = blob_volume(shape=(7, 32, 32), seed=1, shift=(1, 1, -1))
    paths = Case(root, root / "target.nrrd", root / "target.seg.nrrd", root / "reference.nrrd",
                 root / "reference.seg.nrrd", model_dir)
    write_image(image, paths.target)
    write_labels(labels, paths.target_labels)
    write_image(other, paths.reference)
    write_labels(other_labels, paths.reference_labels)
    return paths


def save_tiny_model(folder: Path) -> Path:
    import torch

    from KnowledgeSAMLib import build_model, save_model

    torch.manual_seed(0)
    save_model(build_model("tiny"), folder)
    return folder


def assert_pair_from_one_run(output: Path) -> dict:
    """The labels file and its sidecar exist and belong together (the sidecar names the labels' SHA256)."""
    record = json.loads(sidecar_path(output).read_text(encoding="utf-8"))
    assert record["output"] == {"file": output.name, "sha256": sha256(output)}, \
        f"{output.name} and its sidecar come from different runs"
    return record


def leftovers(folder: Path) -> list[str]:
    """Hidden files an interrupted run left (temporaries, journals; a dead run's lock file is harmless)."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") and not p.name.endswith(".ksam-lock"))


# ------------------------------------------------------------------------------------- forked runs

@dataclass
class Child:
    pid: int
    log: Path
    marker: Path
    status: int | None = None

    def wait_for_pause(self) -> None:
        """Block until the child reached its pause point (it wrote the marker file)."""
        deadline = time.monotonic() + WAIT_S
        while not self.marker.exists():
            finished, status = os.waitpid(self.pid, os.WNOHANG)
            if finished:
                self.status = status
                raise AssertionError(f"the run ended before its pause point: {self.output()}")
            if time.monotonic() > deadline:
                self.kill(signal.SIGKILL)
                raise AssertionError("the run never reached its pause point")
            time.sleep(0.02)

    def resume(self) -> None:
        self.marker.unlink()

    def kill(self, signum: int = signal.SIGKILL) -> None:
        os.kill(self.pid, signum)

    def wait(self) -> int:
        """The exit code (128 + signal for a killed child, as a shell reports it)."""
        if self.status is None:
            _, self.status = os.waitpid(self.pid, 0)
        if os.WIFSIGNALED(self.status):
            return 128 + os.WTERMSIG(self.status)
        return os.WEXITSTATUS(self.status)

    def output(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace") if self.log.exists() else ""


def fork_cli(argv: Sequence[str], workdir: Path, pause: str | None = None, name: str = "run") -> Child:
    """Run ``knowledgesam <argv>`` in a forked child (stdout and stderr to ``workdir/<name>.log``),
    pausing at ``pause`` (see ``KnowledgeSAMLib._test_hooks``)."""
    log, marker = workdir / f"{name}.log", workdir / f"{name}.paused"
    marker.unlink(missing_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 99
        try:
            fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(fd, 1)
            os.dup2(fd, 2)
            sys.stdout = open(1, "w", encoding="utf-8", closefd=False)
            sys.stderr = open(2, "w", encoding="utf-8", closefd=False)
            signal.signal(signal.SIGINT, signal.default_int_handler)
            signal.signal(signal.SIGTERM, signal.SIG_DFL)
            os.environ.pop(ENV_PAUSE, None)
            if pause:
                os.environ[ENV_PAUSE], os.environ[ENV_PAUSE_FILE] = pause, str(marker)
            from KnowledgeSAMLib.cli import main

            code = main(list(argv))
        except BaseException:  # noqa: BLE001 - report and leave the child, whatever happened
            import traceback

            traceback.print_exc()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    return Child(pid, log, marker)
