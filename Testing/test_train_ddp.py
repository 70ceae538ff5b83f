"""DDP with two gloo processes on the CPU: gradients are synchronised, rank 0 writes, validation is
sharded and all-reduced, and a 2-process run resumes."""

from __future__ import annotations

import csv
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

from train_helpers import synthetic_sources

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _config(out_dir: str, steps: int = 6):
    from KnowledgeSAMLib.train.config import config_from_dict

    return config_from_dict({
        "data": {"sources": [{"kind": "kidney_phantom"}]},
        "optim": {"lr": 1e-3, "warmup_steps": 2, "epochs": 2, "steps_per_epoch": steps // 2, "batch_size": 2},
        "validation": {"max_slices_per_case": 3},
        "loss": {"iou_weight": 0.05},
        "run": {"out_dir": out_dir, "log_every": 1, "device": "cpu"},
    })


def _worker(rank: int, world: int, port: int, out_dir: str, mode: str) -> None:
    """mode: "straight" (6 steps), "cancel" (rank 1 alone asks to stop after step 2), "resume"."""
    os.environ.update({"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "RANK": str(rank),
                       "WORLD_SIZE": str(world), "LOCAL_RANK": str(rank)})
    torch.set_num_threads(1)
    from KnowledgeSAMLib.errors import CancelledError
    from KnowledgeSAMLib.infer.cancel import CancelToken
    from KnowledgeSAMLib.train.distributed import init_distributed, shutdown
    from KnowledgeSAMLib.train.trainer import Trainer

    ctx = init_distributed("cpu")
    assert ctx.backend == "gloo" and ctx.world_size == world
    cancel = CancelToken()

    def progress(event, done, total, info):
        if mode == "cancel" and rank == 1 and event == "step" and done == 2:
            cancel.cancel()

    try:
        trainer = Trainer(_config(out_dir), sources=synthetic_sources(seed=2, n_train=3, n_val=2, size=64, n=6),
                          ctx=ctx, resume="auto" if mode == "resume" else None, progress=progress, cancel=cancel)
        try:
            result = trainer.fit()
        except CancelledError:
            torch.save({"cancelled": True}, os.path.join(out_dir, f"rank{rank}_{mode}.pt"))
            return
        params = {n: p.detach() for n, p in trainer.model.named_parameters() if p.requires_grad}
        torch.save({"params": params, "steps": result.steps, "val": result.val},
                   os.path.join(out_dir, f"rank{rank}_{mode}.pt"))
    finally:
        shutdown(ctx)


def _spawn(out_dir, mode):
    mp.start_processes(_worker, args=(2, _free_port(), str(out_dir), mode), nprocs=2, join=True,
                       start_method="spawn")


@pytest.fixture(scope="module")
def straight_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ddp_straight")
    _spawn(out, "straight")
    return out


def test_two_gloo_processes_train_in_sync(straight_run):
    tmp_path = straight_run
    r0, r1 = (torch.load(tmp_path / f"rank{r}_straight.pt", weights_only=False) for r in (0, 1))
    assert r0["steps"] == r1["steps"] == 6
    assert r0["params"].keys() == r1["params"].keys()
    assert all(torch.equal(r0["params"][k], r1["params"][k]) for k in r0["params"]), "ranks diverged"
    assert r0["val"] == r1["val"] and "mean" in r0["val"]

    # rank 0 wrote one log and the checkpoints; each rank's sampler state was kept
    with (tmp_path / "train_log.csv").open(encoding="utf-8") as handle:
        assert [int(r["step"]) for r in csv.DictReader(handle)] == list(range(1, 7))
    meta = json.loads((tmp_path / "checkpoints" / "step_0000006" / "meta.json").read_text(encoding="utf-8"))
    assert meta["world_size"] == 2 and len(meta["samplers"]) == 2
    assert meta["samplers"][0] != meta["samplers"][1], "ranks must draw different pairs"

    # the sharded, all-reduced validation equals a single-process validation of the same weights
    from KnowledgeSAMLib import load_model
    from KnowledgeSAMLib.train.validate import validation_dice

    model = load_model(tmp_path / "model")
    single = validation_dice(model, synthetic_sources(seed=2, n_train=3, n_val=2, size=64, n=6),
                             torch.device("cpu"), max_slices_per_case=3)
    assert single == pytest.approx(r0["val"])



def test_two_processes_stop_together_and_resume_exactly(straight_run, tmp_path):
    straight, interrupted = straight_run, tmp_path
    _spawn(interrupted, "cancel")  # only rank 1 is asked to stop: both must stop at the same step
    assert all(torch.load(interrupted / f"rank{r}_cancel.pt")["cancelled"] for r in (0, 1))
    from KnowledgeSAMLib.train.checkpoint import latest_checkpoint

    assert latest_checkpoint(interrupted).name == "step_0000002"
    _spawn(interrupted, "resume")
    a = torch.load(straight / "rank0_straight.pt", weights_only=False)
    b = torch.load(interrupted / "rank0_resume.pt", weights_only=False)
    assert b["steps"] == 6
    assert all(torch.equal(a["params"][k], b["params"][k]) for k in a["params"]), "resumed DDP run differs"
