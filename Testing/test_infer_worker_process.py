"""The inference process (KnowledgeSAMLib/infer/worker_process.py): a run, progress, cancel, a crash, a
cancel that is not honoured, errors that keep their type, and one process (one loaded model) for many runs.

The engines are the shipped stand-ins (KnowledgeSAM/KnowledgeSAMSlicer/standins.py): the child imports them
by name, as it does inside Slicer. No timing is asserted; waits are bounded so a hang fails instead.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "KnowledgeSAM"))

from KnowledgeSAMSlicer import standins  # noqa: E402

from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment  # noqa: E402
from KnowledgeSAMLib.errors import CancelledError, InputError  # noqa: E402
from KnowledgeSAMLib.infer.provenance import Sources  # noqa: E402
from KnowledgeSAMLib.infer.request import SegmentRequest  # noqa: E402
from KnowledgeSAMLib.infer.worker_process import WorkerError, WorkerProcess  # noqa: E402

WAIT_S = 120.0  # generous: the machines are shared; a hang still fails


def request(shape=(6, 16, 16)) -> SegmentRequest:
    geometry = Geometry(spacing=(0.8, 0.8, 2.0))
    array = np.arange(np.prod(shape), dtype=np.int16).reshape(shape)
    layers = np.zeros((1,) + shape, np.uint8)
    layers[0, 2, 4:9, 5:11] = 1
    labels = Labels(layers, geometry, [Segment("kidney", 1, 0, (0.8, 0.2, 0.1))])
    image = Image(array=array, geometry=geometry, source="target")
    return SegmentRequest(target=image, reference=image, reference_labels=labels, mode="anchor", device="cpu")


def wait(job, until=None):
    deadline = time.monotonic() + WAIT_S
    while not job.done():
        if until is not None and until(job):
            return job
        assert time.monotonic() < deadline, "the job did not finish"
        time.sleep(0.01)
    return job


@pytest.fixture()
def worker():
    process = WorkerProcess(env={"KNOWLEDGESAM_WORKER_THREADS": "1"})
    yield process
    process.stop()


def test_a_run_comes_back_with_progress_and_the_processs_provenance(worker):
    seen = []
    job = worker.submit(request(), Sources(knowledge_prompt="kidney on slice 2"), engine=standins.countingEngine)
    wait(job, until=lambda j: seen.append(j.progress()) and False)
    result = job.result()
    assert result.labels.shape == (6, 16, 16)
    np.testing.assert_array_equal(result.labels.mask(result.labels.segments[0]), request().reference_labels.layers[0] != 0)
    assert result.provenance["pid"] == worker.pid != None  # noqa: E711 - computed in the child, which still runs
    assert "kidney on slice 2" in str(result.provenance), "the Segmenter's provenance (with the sources) comes back"
    assert job.progress() == (1, 1)


def test_one_process_serves_many_runs(worker):
    first = wait(worker.submit(request(), engine=standins.countingEngine)).result().provenance
    second = wait(worker.submit(request(), engine=standins.countingEngine)).result().provenance
    assert first["pid"] == second["pid"] and second["calls"] == first["calls"] + 1
    assert worker.starts == 1


def refusing_engine(request, model, progress, cancel):
    raise InputError("target 'x': the engine refuses this input")


def failing_engine(request, model, progress, cancel):
    return {}["a bug"]


def test_errors_keep_their_type_and_the_process_keeps_serving(worker):
    with pytest.raises(InputError, match="the engine refuses this input"):
        wait(worker.submit(request(), engine=refusing_engine)).result()
    with pytest.raises(WorkerError, match="failed in the inference process: KeyError") as raised:
        wait(worker.submit(request(), engine=failing_engine)).result()
    assert "failing_engine" in raised.value.details, "the child's traceback comes with the error"
    assert wait(worker.submit(request(), engine=standins.copyEngine)).result() is not None
    assert worker.starts == 1


def test_cancel_stops_the_run_and_the_next_one_runs(worker):
    job = worker.submit(request(), engine=standins.untilCancelled)
    wait(job, until=lambda j: j.progress() == (1, 10))
    job.cancel()
    with pytest.raises(CancelledError):
        wait(job).result()
    assert wait(worker.submit(request(), engine=standins.copyEngine)).result() is not None
    assert worker.starts == 1, "a cancel does not cost the loaded model"


def test_a_crash_is_a_clear_error_and_the_next_run_starts_a_new_process(worker):
    job = wait(worker.submit(request(), engine=standins.crashEngine))
    with pytest.raises(WorkerError, match="stopped unexpectedly .*nothing was changed") as raised:
        job.result()
    if sys.platform != "win32":
        assert "SIGKILL" in str(raised.value)
    assert wait(worker.submit(request(), engine=standins.copyEngine)).result() is not None
    assert worker.starts == 2


def test_a_cancel_that_is_not_honoured_kills_the_process():
    worker = WorkerProcess(kill_after_s=0.5)
    try:
        job = worker.submit(request(), engine=standins.ignoresCancel)
        wait(job, until=lambda j: j.progress() == (1, 10))
        pid = worker.pid
        job.cancel()
        with pytest.raises(CancelledError, match="process was stopped"):
            wait(job).result()
        assert worker.pid is None and pid is not None
    finally:
        worker.stop()


def test_a_second_job_is_refused_while_one_runs(worker):
    job = worker.submit(request(), engine=standins.untilCancelled)
    with pytest.raises(WorkerError, match="already running"):
        worker.submit(request(), engine=standins.copyEngine)
    job.cancel()
    wait(job)


def test_cancel_before_the_process_answered_sends_nothing(worker):
    job = worker.submit(request(), engine=standins.countingEngine)
    job.cancel()
    with pytest.raises(CancelledError):
        wait(job).result()
    later = wait(worker.submit(request(), engine=standins.countingEngine)).result()
    assert later.provenance["calls"] in (1, 2)  # the cancelled one ran at most once


def test_stop_ends_a_busy_process_at_once():
    worker = WorkerProcess()
    job = worker.submit(request(), engine=standins.ignoresCancel)  # never looks at the cancel token
    wait(job, until=lambda j: j.progress() == (1, 10))
    process = worker._proc
    worker.stop(timeout_s=60)
    assert process.returncode == 0, "it exited when told (a kill would give -9)"
    with pytest.raises(CancelledError):
        job.result()


def test_a_missing_interpreter_is_a_clear_error():
    with pytest.raises(WorkerError, match="could not start the inference process"):
        WorkerProcess(python="/nonexistent/python").submit(request(), engine=standins.copyEngine)


def test_an_update_goes_to_the_same_segmenter_and_encodes_no_slice_again(worker, tmp_path):
    """The annotator's loop in the inference process, with a real (tiny, saved) model: the run encodes the
    volume, the update of a corrected slice re-segments only its slab and re-encodes nothing."""
    from dataclasses import replace

    from KnowledgeSAMLib.infer.request import EngineOptions
    from reliability_helpers import save_tiny_model

    folder = save_tiny_model(tmp_path / "tiny")
    first = request(shape=(10, 24, 24))
    walk_on = EngineOptions(propagate_min_confidence=0.0, propagate_min_pixels=0)  # random weights: never stop
    first = replace(first, mode="propagate", roi="none", options=walk_on, batch_size=4)
    first.reference_labels.layers[0, 7, 4:9, 5:11] = 1  # labelled slices 2 and 7
    earlier = wait(worker.submit(first, model=str(folder))).result()
    assert earlier.provenance["counts"]["target_slices_encoded"] == 10
    corrected = earlier.labels.layers.copy()
    corrected[0, 7] = first.reference_labels.layers[0, 7]
    corrected[0, 7, 10:12, 10:12] = 1  # the annotator corrects slice 7
    update = replace(first, reference_labels=Labels(corrected, earlier.labels.geometry, earlier.labels.segments),
                     reference_slices=[2, 7])
    result = wait(worker.submit(update, model=str(folder), update=[7])).result()
    assert result.provenance["update"]["slab"] == [3, 10]
    assert result.provenance["counts"]["target_slices_encoded"] == 0, "the volume's embeddings were kept"
    np.testing.assert_array_equal(result.labels.layers[0, :3], corrected[0, :3])  # outside the slab: as it was
    np.testing.assert_array_equal(result.labels.layers[0, 7], corrected[0, 7])  # the correction, as drawn
    assert worker.starts == 1
