"""Nothing lost when a run dies: kill -9, Ctrl+C and SIGTERM at named moments, and two runs on one output.

Each run is the real ``knowledgesam segment`` (tiny saved model, 6-slice synthetic volume) in a forked child that
pauses at a named point (``KnowledgeSAMLib._test_hooks``: "compute", "staged" = temporaries written, "committing"
= rename journal written, "between-renames", "written" = an output committed) so the signal lands exactly there.
Every case ends with the same checks: inputs byte-identical; the old output pair intact or fully replaced (after
the next run completes an interrupted commit); labels and sidecar from one run (the sidecar names the labels'
SHA256); no temporaries left once the next run has claimed the output.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.infer.output import sidecar_path

from reliability_helpers import (ROOT, WAIT_S, assert_pair_from_one_run, fork_cli, leftovers, make_case,
                                 save_tiny_model, sha256)

pytestmark = pytest.mark.skipif(not hasattr(os, "fork"), reason="kill tests fork a child (POSIX)")


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture()
def case(tmp_path, model_dir):
    return make_case(tmp_path / "inputs", model_dir)


def _old_pair(case, output):
    """An earlier run's complete output (only the 'bright' segment, so a later run's labels differ)."""
    assert main(case.anchor_argv(output, "--labels", "1")) == 0
    assert_pair_from_one_run(output)
    return {output: sha256(output), sidecar_path(output): sha256(sidecar_path(output))}


def _segments(output) -> list[str]:
    return [s["name"] for s in assert_pair_from_one_run(output)["segments"]]


def test_kill_9_during_compute_leaves_the_old_output_and_blocks_nobody(case, tmp_path, capsys):
    before = case.fingerprints()
    out = tmp_path / "out" / "pred.seg.nrrd"
    old = _old_pair(case, out)
    child = fork_cli(case.anchor_argv(out, "--overwrite"), tmp_path, pause="compute")
    child.wait_for_pause()
    child.kill(signal.SIGKILL)
    assert child.wait() == 128 + signal.SIGKILL
    assert {path: sha256(path) for path in old} == old
    assert case.fingerprints() == before and leftovers(out.parent) == []
    assert main(case.anchor_argv(out, "--overwrite")) == 0  # the dead run's lock holds nobody back
    assert _segments(out) == ["bright", "dim"] and case.fingerprints() == before


@pytest.mark.parametrize("moment, replaced", [("staged", False), ("committing", True), ("between-renames", True)])
def test_kill_9_while_writing_leaves_one_whole_pair(moment, replaced, case, tmp_path, capsys):
    before = case.fingerprints()
    out = tmp_path / "out" / "pred.seg.nrrd"
    old = _old_pair(case, out)
    child = fork_cli(case.anchor_argv(out, "--overwrite"), tmp_path, pause=moment)
    child.wait_for_pause()
    child.kill(signal.SIGKILL)
    assert child.wait() == 128 + signal.SIGKILL
    if not replaced:  # before the commit point: nothing of the new run is visible
        assert {path: sha256(path) for path in old} == old
    capsys.readouterr()
    assert main(case.anchor_argv(out)) == 2  # the next run completes or undoes the write, then refuses: exists
    err = capsys.readouterr().err
    assert "file exists" in err and ("completed the interrupted write" in err) == replaced, err
    assert _segments(out) == (["bright", "dim"] if replaced else ["bright"])
    if not replaced:
        assert {path: sha256(path) for path in old} == old
    assert leftovers(out.parent) == [] and case.fingerprints() == before


def test_kill_9_after_the_first_of_two_targets(case, tmp_path):
    before = case.fingerprints()
    folder = tmp_path / "targets"
    folder.mkdir()
    for name in ("a.nrrd", "b.nrrd"):
        (folder / name).write_bytes(case.target.read_bytes())
    argv = ["segment", "--quiet", "--device", "cpu", "--model", str(case.model), "--target", str(folder),
            "--reference", str(case.reference), "--reference-labels", str(case.reference_labels),
            "--output", str(tmp_path / "out") + "/"]
    child = fork_cli(argv, tmp_path, pause="written")
    child.wait_for_pause()
    child.kill(signal.SIGKILL)
    child.wait()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == \
        ["a.seg.nrrd", "a.seg.nrrd.ksam.json"]
    assert_pair_from_one_run(tmp_path / "out" / "a.seg.nrrd")
    assert leftovers(tmp_path / "out") == [] and case.fingerprints() == before


def test_ctrl_c_after_the_first_of_three_targets_says_exactly_what_was_written(case, tmp_path):
    folder = tmp_path / "targets"
    folder.mkdir()
    for name in ("a.nrrd", "b.nrrd", "c.nrrd"):
        (folder / name).write_bytes(case.target.read_bytes())
    argv = ["segment", "--quiet", "--device", "cpu", "--model", str(case.model), "--target", str(folder),
            "--reference", str(case.reference), "--reference-labels", str(case.reference_labels),
            "--output", str(tmp_path / "out") + "/"]
    child = fork_cli(argv, tmp_path, pause="written")
    child.wait_for_pause()
    child.kill(signal.SIGINT)
    assert child.wait() == 130, child.output()
    report = child.output().strip().splitlines()[-1]
    assert report.startswith("knowledgesam: interrupted: 1 of 3 output(s) written"), report
    assert str(tmp_path / "out" / "a.seg.nrrd") in report and "nothing else was written" in report
    assert "no output was written" not in child.output() and "Traceback" not in child.output()
    assert sorted(p.name for p in (tmp_path / "out").iterdir() if not p.name.startswith(".")) == \
        ["a.seg.nrrd", "a.seg.nrrd.ksam.json"]


def test_sigterm_during_compute_reports_that_nothing_was_written(case, tmp_path):
    out = tmp_path / "out" / "pred.seg.nrrd"
    child = fork_cli(case.anchor_argv(out), tmp_path, pause="compute")
    child.wait_for_pause()
    child.kill(signal.SIGTERM)
    assert child.wait() == 143, child.output()
    assert child.output().strip().splitlines()[-1] == "knowledgesam: terminated: no output was written"
    assert not out.exists() and not sidecar_path(out).exists()


def test_ctrl_c_during_the_commit_waits_for_it_and_counts_it(case, tmp_path):
    out = tmp_path / "out" / "pred.seg.nrrd"
    old = _old_pair(case, out)
    child = fork_cli(case.anchor_argv(out, "--overwrite"), tmp_path, pause="between-renames")
    child.wait_for_pause()
    child.kill(signal.SIGINT)  # deferred: the renames finish first
    child.resume()
    assert child.wait() == 130, child.output()
    assert "1 of 1 output(s) written" in child.output().strip().splitlines()[-1]
    assert _segments(out) == ["bright", "dim"] and sha256(out) != old[out]
    assert leftovers(out.parent) == []


@pytest.mark.parametrize("overwrite", [True, False])
def test_a_second_run_on_the_same_output_refuses_at_once(overwrite, case, tmp_path, capsys):
    before = case.fingerprints()
    out = tmp_path / "out" / "pred.seg.nrrd"
    flag = ("--overwrite",) if overwrite else ()
    first = fork_cli(case.anchor_argv(out, *flag), tmp_path, pause="compute", name="first")
    first.wait_for_pause()  # holds the output's lock, mid-compute
    try:
        capsys.readouterr()
        assert main(case.anchor_argv(out, *flag)) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("knowledgesam: error: ") and "another KnowledgeSAM run is writing" in err, err
        assert "\n" not in err and not out.exists()
    finally:
        first.resume()
    assert first.wait() == 0, first.output()
    assert _segments(out) == ["bright", "dim"] and case.fingerprints() == before


def test_two_runs_on_outputs_of_different_formats_in_one_folder_both_finish(case, tmp_path):
    folder = tmp_path / "out"
    runs = [fork_cli(case.anchor_argv(folder / name), tmp_path, pause="compute", name=name)
            for name in ("pred.seg.nrrd", "pred.nii.gz")]
    for run in runs:
        run.wait_for_pause()
    for run in runs:
        run.resume()
    assert [run.wait() for run in runs] == [0, 0], [run.output() for run in runs]
    for name in ("pred.seg.nrrd", "pred.nii.gz"):
        assert_pair_from_one_run(folder / name)  # each its own sidecar: pred.seg.nrrd.ksam.json, pred.nii.gz.ksam.json


def test_kill_9_of_a_real_interpreter_between_the_renames(case, tmp_path, capsys):
    """The same guarantee through ``python -m KnowledgeSAMLib.cli`` in its own process (the entry point)."""
    before = case.fingerprints()
    out = tmp_path / "out" / "pred.seg.nrrd"
    old = _old_pair(case, out)
    marker = tmp_path / "paused"
    env = {**os.environ, "KNOWLEDGESAM_TEST_PAUSE": "between-renames", "KNOWLEDGESAM_TEST_PAUSE_FILE": str(marker),
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    process = subprocess.Popen([sys.executable, "-m", "KnowledgeSAMLib.cli", *case.anchor_argv(out, "--overwrite")],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    try:
        import time

        deadline = time.monotonic() + WAIT_S
        while not marker.exists():
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "never reached the pause point"
            time.sleep(0.05)
        assert sha256(out) != old[out] and sha256(sidecar_path(out)) == old[sidecar_path(out)]  # mid-commit
    finally:
        process.kill()
        process.wait()
    capsys.readouterr()
    assert main(case.anchor_argv(out)) == 2
    assert "completed the interrupted write" in capsys.readouterr().err
    assert _segments(out) == ["bright", "dim"] and leftovers(out.parent) == [] and case.fingerprints() == before
