"""The Slicer module's Qt-free helpers (KnowledgeSAM/KnowledgeSAMSlicer) and the batch script's argument
handling, in plain Python: the job monitor on the inference process, the dependency facts, device listing,
the sample data manifest and output naming. (The install flow: test_slicer_install.py.)"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "KnowledgeSAM"))

from KnowledgeSAMSlicer import dependencies, devices, environment, sampledata, standins, worker  # noqa: E402

from KnowledgeSAMLib.errors import CancelledError, InputError  # noqa: E402
from slicer_stubs import FakeBar, FakeTimer, drive  # noqa: E402


def load_batch_script():
    spec = importlib.util.spec_from_file_location("KnowledgeSAMBatch", ROOT / "KnowledgeSAM" / "Scripts" / "KnowledgeSAMBatch.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module

# ------------------------------------------------------------------------------------------------ worker


def tiny_request():
    from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment
    from KnowledgeSAMLib.infer.request import SegmentRequest

    geometry = Geometry(spacing=(1.0, 1.0, 2.0))
    layers = np.zeros((1, 4, 12, 12), np.uint8)
    layers[0, 1, 3:7, 3:7] = 1
    image = Image(array=np.zeros((4, 12, 12), np.int16), geometry=geometry, source="t")
    return SegmentRequest(target=image, reference=image, reference_labels=Labels(layers, geometry, [Segment("k", 1, 0)]),
                          mode="anchor", device="cpu")


@pytest.fixture(scope="module")
def process():
    from KnowledgeSAMLib.mrml import WorkerProcess

    handle = WorkerProcess(env={"KNOWLEDGESAM_WORKER_THREADS": "1"})
    yield handle
    handle.stop()


def test_job_monitor_shows_progress_and_hands_back_the_finished_job(process):
    bar, finished = FakeBar(), []
    monitor = worker.JobMonitor(bar, finished.append, FakeTimer(), worker=process)
    job = monitor.start(tiny_request(), engine=standins.untilCancelled)
    assert monitor.busy and monitor._timer.active and bar.visible and bar.range == (0, 0)
    drive(monitor, until=lambda: bar.range == (0, 10))
    assert bar.value == 1 and not finished
    monitor.cancel()
    drive(monitor)
    assert finished == [job] and not monitor.busy and not bar.visible and not monitor._timer.active
    with pytest.raises(CancelledError):
        job.result()
    assert not monitor.discard, "a plain cancel keeps the result's outcome (the Cancelled message)"


def test_job_monitor_stop_cancels_and_marks_the_result_unwanted(process):
    finished = []
    monitor = worker.JobMonitor(FakeBar(), finished.append, FakeTimer(), worker=process)
    monitor.start(tiny_request(), engine=standins.untilCancelled)
    monitor.stop()
    assert monitor.discard and monitor.job.cancelled and not monitor._timer.active


def test_the_inference_process_runs_slicers_python_when_there_is_one(monkeypatch, tmp_path):
    assert worker.pythonExecutable() == sys.executable  # plain Python: no PythonSlicer on PATH
    fake = tmp_path / "PythonSlicer"
    fake.write_text("#!/bin/sh\n")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert worker.pythonExecutable() == str(fake)


# ------------------------------------------------------------------------------------------ dependencies


def test_requirements_file_matches_pyproject_minus_slicers_own_packages():
    tomllib = pytest.importorskip("tomllib", reason="Python < 3.11 has no tomllib")

    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    name = lambda r: dependencies._NAME.match(r).group(1).lower()  # noqa: E731
    wanted = {name(r) for r in project} - {"torch", "numpy", "simpleitk"}
    listed = {name(r) for r in dependencies.readRequirements(ROOT / "KnowledgeSAM" / "Resources" / "requirements.txt")}
    assert listed == wanted
    assert not listed & {p.lower() for p in dependencies.PROTECTED_PACKAGES}


def test_missing_requirements_and_protected_constraints():
    assert dependencies.missingRequirements(["numpy>=1.0"]) == []
    assert dependencies.missingRequirements(["numpy>=999"]) == ["numpy>=999"]
    assert dependencies.missingRequirements(["surely-not-installed-package-xyz"]) == ["surely-not-installed-package-xyz"]
    constraints = dependencies.protectedConstraints()
    assert any(line.startswith("numpy==") for line in constraints)
    assert all("==" in line for line in constraints)

# ------------------------------------------------------------------------------------------ devices & env


def test_devices_list_cpu_and_auto():
    choices = devices.availableDevices()
    values = [c.value for c in choices]
    assert values[0] == "auto" and "cpu" in values
    assert all(c.label for c in choices)


def test_environment_reports_library_available_here():
    assert environment.libraryUnavailableReason() is None
    assert environment.ensureLibraryImportable(str(ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")) is None

# ------------------------------------------------------------------------------------------ sample data


SAMPLE_DIR = ROOT / "KnowledgeSAM" / "Resources" / "SampleData"


@pytest.mark.skipif(not (SAMPLE_DIR / sampledata.MANIFEST).is_file(),
                    reason="sample data not generated yet (python KnowledgeSAM/Scripts/make_sample_data.py)")
def test_sample_data_manifest_checksums_and_size():
    manifest = sampledata.readManifest(SAMPLE_DIR)
    names = [s["name"] for s in manifest["samples"]]
    assert sampledata.SAMPLE_NAME in names
    total = 0
    for sample in manifest["samples"]:
        kinds = sorted(f["fileType"] for f in sample["files"])
        assert kinds == ["SegmentationFile", "VolumeFile"]
        assert (ROOT / "KnowledgeSAM" / "Resources" / "Icons" / sample["thumbnail"]).is_file()
        for entry in sample["files"]:
            path = SAMPLE_DIR / entry["file"]
            assert sampledata.sha256(path) == entry["sha256"], f"{path.name}: checksum in {sampledata.MANIFEST} is stale"
            total += path.stat().st_size
    assert total < 1_000_000, f"sample data are {total} bytes; keep them to a few hundred KB"


@pytest.mark.skipif(not (SAMPLE_DIR / sampledata.MANIFEST).is_file(), reason="sample data not generated yet")
def test_sample_segmentation_reads_back_with_segment_names():
    from KnowledgeSAMLib.data.io import read_image, read_labels

    sample = next(s for s in sampledata.readManifest(SAMPLE_DIR)["samples"] if s["name"] == sampledata.SAMPLE_NAME)
    files = {f["fileType"]: SAMPLE_DIR / f["file"] for f in sample["files"]}
    image = read_image(files["VolumeFile"])
    labels = read_labels(files["SegmentationFile"])
    assert {s.name for s in labels.segments} >= {"artery", "medulla", "cortex"}
    assert labels.shape == image.shape
    labelled = [z for z in range(labels.shape[0]) if labels.layers[:, z].any()]
    assert len(labelled) == 1, "the one-click sample is a one-slice reference"

# ------------------------------------------------------------------------------------------ batch script


def test_batch_arguments_and_output_plan(tmp_path):
    batch = load_batch_script()
    targets = []
    for name in ("case1.nii.gz", "case2.nrrd"):
        (tmp_path / name).write_bytes(b"x")
        targets.append(str(tmp_path / name))
    args = batch.parseArguments(["--target", *targets, "--reference", "atlas.nrrd", "--reference-segmentation",
                                 "atlas.seg.nrrd", "--segments", "kidney", "artery", "--output", str(tmp_path / "out") + "/",
                                 "--slice-range", "2", "9", "--mode", "volume"])
    assert args.segments == ["kidney", "artery"] and args.slice_range == [2, 9] and args.mode == "volume"
    plan = batch.planOutputs(args.target, args.output)
    assert [Path(p).name for _, p in plan] == ["case1.seg.nrrd", "case2.seg.nrrd"]
    pattern = batch.planOutputs(targets, str(tmp_path / "{name}-ksam.seg.nrrd"))
    assert [Path(p).name for _, p in pattern] == ["case1-ksam.seg.nrrd", "case2-ksam.seg.nrrd"]
    single = batch.planOutputs(targets[:1], str(tmp_path / "one.seg.nrrd"))
    assert single == [(targets[0], str(tmp_path / "one.seg.nrrd"))]


@pytest.mark.parametrize("problem, argv, message", [
    ("missing argument", ["--target", "a.nrrd"], "required"),
    ("bad mode", ["--target", "a.nrrd", "--reference", "r", "--reference-segmentation", "s", "--output", "o.seg.nrrd",
                  "--mode", "magic"], "invalid choice"),
])
def test_batch_bad_arguments_are_one_line_errors(problem, argv, message):
    batch = load_batch_script()
    with pytest.raises(batch.UsageError, match=message):
        batch.parseArguments(argv)


def test_batch_refuses_clashes_and_existing_files(tmp_path):
    """The batch script plans outputs with the CLI's rules (KnowledgeSAMLib.infer.paths), Slicer's file types."""
    batch = load_batch_script()
    a, b = tmp_path / "a" / "case.nrrd", tmp_path / "b" / "case.nrrd"
    for path in (a, b):
        path.parent.mkdir()
        path.write_bytes(b"x")
    with pytest.raises(InputError, match="would both be written to"):
        batch.planOutputs([str(a), str(b)], str(tmp_path / "out") + "/")
    with pytest.raises(InputError, match="folder"):
        batch.planOutputs([str(a), str(b)], str(tmp_path / "out.seg.nrrd"))
    existing = tmp_path / "done.seg.nrrd"
    existing.write_bytes(b"old")
    with pytest.raises(InputError, match="not overwriting"):
        batch.planOutputs([str(a)], str(existing))
    assert batch.planOutputs([str(a)], str(existing), overwrite=True)
    with pytest.raises(InputError, match="target image not found"):
        batch.planOutputs([str(tmp_path / "nope.nrrd")], str(tmp_path / "x.seg.nrrd"))
    with pytest.raises(InputError, match=r"\.seg\.nrrd"):
        batch.planOutputs([str(a)], str(tmp_path / "x.png"))
    assert existing.read_bytes() == b"old"


def test_batch_main_reports_usage_errors_with_exit_status_2(capsys):
    batch = load_batch_script()
    assert batch.main(["--target", "missing.nrrd", "--reference", "r.nrrd", "--reference-segmentation", "s.seg.nrrd",
                       "--output", "o.seg.nrrd"]) == batch.EXIT_BAD_INPUT
    assert "missing.nrrd: target image not found" in capsys.readouterr().err
