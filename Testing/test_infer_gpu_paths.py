"""The GPU throughput paths, checked on the CPU: batches sized from free memory (with out-of-memory back-off),
bf16 as a measured per-config setting, pinned host-to-device copies. The GPU numbers come from
``bench/device/lease.sh``; nothing here needs a GPU."""

from __future__ import annotations

import pytest
import torch

from KnowledgeSAMLib.infer import EngineOptions
from KnowledgeSAMLib.infer.device import DevicePolicy
from KnowledgeSAMLib.infer.gpu_precision import measured, use_bf16
from KnowledgeSAMLib.model.build import build_model


class FakeProbe:
    """A device with ``free`` bytes where every batch item takes ``per_item`` bytes at its peak."""

    def __init__(self, free: int, per_item: int) -> None:
        self.free, self.per_item, self.items = free, per_item, 0

    def available(self) -> int:
        return self.free

    def start(self) -> int:
        return 1000

    def peak(self) -> int:
        return 1000 + self.items * self.per_item


def _chunks(policy: DevicePolicy, n: int, probe: FakeProbe, fail_above: int | None = None) -> list[int]:
    sizes = []

    def fn(start: int, stop: int) -> None:
        if fail_above is not None and stop - start > fail_above:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB")
        probe.items = stop - start
        sizes.append(stop - start)

    policy.run_chunks(n, fn)
    return sizes


def test_batch_grows_to_what_free_memory_holds():
    probe = FakeProbe(free=10_000, per_item=100)  # 0.6 * 10000 / 100 = 60 items fit
    policy = DevicePolicy(torch.device("cpu"), batch_size=2, grow_batch=True, probe=probe, max_batch_size=128)
    assert _chunks(policy, 200, probe) == [2, 60, 60, 60, 18]
    capped = DevicePolicy(torch.device("cpu"), batch_size=2, grow_batch=True, probe=FakeProbe(10**9, 100),
                          max_batch_size=32)
    assert _chunks(capped, 70, capped.probe) == [2, 32, 32, 4]


def test_out_of_memory_halves_the_batch_and_stops_growing():
    probe = FakeProbe(free=10_000, per_item=100)
    policy = DevicePolicy(torch.device("cpu"), batch_size=4, grow_batch=True, probe=probe)
    sizes = _chunks(policy, 100, probe, fail_above=40)  # the estimate says 60 fit, the device says 40 at most
    assert sizes == [4, 30, 30, 30, 6]
    assert not policy.grow_batch and policy.batch_size == 30
    assert any("out of memory at batch size 60" in note for note in policy.notes)


def test_growth_is_off_without_a_probe_and_copies_stay_plain_on_the_cpu():
    policy = DevicePolicy(torch.device("cpu"), batch_size=3, grow_batch=True)  # CPU: no memory probe
    assert not policy.grow_batch
    seen = []
    policy.run_chunks(7, lambda a, b: seen.append(b - a))
    assert seen == [3, 3, 1]
    tensor = torch.rand(2, 3)
    assert policy.to_device(tensor) is tensor or torch.equal(policy.to_device(tensor), tensor)


def test_bf16_is_a_measured_setting_per_config():
    record = measured()["bf16_faster"]
    assert record["vit_b"] is True and record["small"] is False  # the H200 lease of 2026-11-29
    small, lite = build_model("small", pretrained=False), build_model("lite_tiny")
    assert use_bf16("measured", small) is False
    assert use_bf16("measured", lite) is True  # never measured: the engine's default, bf16
    assert use_bf16(True, small) is True and use_bf16(False, small) is False
    assert EngineOptions().mixed_precision is True and EngineOptions().batch_from_memory is False  # defaults as before
    with pytest.raises(ValueError, match="mixed_precision"):
        EngineOptions(mixed_precision="fastest")
