"""Device choice, mixed precision, batch size and the out-of-memory policy of the engine.

Why a policy object: every batched step of the engine (target encoding, reference encoding, heads)
runs through :meth:`DevicePolicy.run_chunks`, so an out-of-memory error anywhere halves the batch and
retries, and at batch size 1 moves the work to the CPU with a warning instead of failing a long run.
On CUDA with ``grow_batch`` the batch also grows to what free memory holds: a GPU runs a 300-slice CT in a few
large batches instead of forty launches of eight (``EngineOptions.batch_from_memory``).
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..errors import KnowledgeSAMError

__all__ = ["choose_device", "DevicePolicy", "MemoryProbe", "is_out_of_memory"]


def choose_device(name: str = "auto") -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then CPU; an explicit device that is absent is an error."""
    name = str(name or "auto")
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        mps = getattr(torch.backends, "mps", None)
        if mps is not None and mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    kind = name.split(":")[0]
    if kind == "cuda" and not torch.cuda.is_available():
        raise KnowledgeSAMError("device 'cuda' was asked for but no CUDA GPU is available (use --device cpu)")
    if kind == "mps":
        mps = getattr(torch.backends, "mps", None)
        if mps is None or not mps.is_available():
            raise KnowledgeSAMError("device 'mps' was asked for but Apple MPS is not available (use --device cpu)")
    if kind not in ("cpu", "cuda", "mps"):
        raise KnowledgeSAMError(f"unknown device {name!r}; choose auto, cpu, cuda or mps")
    return torch.device(name)


def is_out_of_memory(error: BaseException) -> bool:
    """CUDA raises ``torch.OutOfMemoryError``; MPS and some CUDA paths raise a RuntimeError saying so."""
    oom_type = getattr(torch, "OutOfMemoryError", None) or getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(error, oom_type):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


class MemoryProbe:
    """What a CUDA device has free and what a batch used (a seam: tests on the CPU pass a fake)."""

    def __init__(self, device: torch.device) -> None:
        self.device = device

    def available(self) -> int:
        """Bytes a batch may still take: free on the device plus what PyTorch holds cached but unused."""
        free, _ = torch.cuda.mem_get_info(self.device)
        return int(free + torch.cuda.memory_reserved(self.device) - torch.cuda.memory_allocated(self.device))

    def start(self) -> int:
        torch.cuda.reset_peak_memory_stats(self.device)
        return int(torch.cuda.memory_allocated(self.device))

    def peak(self) -> int:
        return int(torch.cuda.max_memory_allocated(self.device))


@dataclass
class DevicePolicy:
    """Where the engine computes, with what precision, and how it reacts to running out of memory.

    ``on_fallback(device)`` is called when the work moves to the CPU (the engine moves the model).
    ``grow_batch`` (CUDA): after each chunk, the batch grows to ``memory_fraction`` of the memory available
    divided by the most a slice has needed so far, up to ``max_batch_size``; the first out-of-memory error stops
    the growth (and halves the batch, as always).
    """

    device: torch.device
    batch_size: int = 8
    bf16_on_cuda: bool = True
    on_fallback: Callable[[torch.device], None] | None = None
    notes: list[str] = field(default_factory=list)
    grow_batch: bool = False
    max_batch_size: int = 128
    memory_fraction: float = 0.6
    probe: MemoryProbe | None = None
    _per_item: float = field(default=0.0, init=False, repr=False)  # most bytes a batch item has needed

    def __post_init__(self) -> None:
        if self.grow_batch and self.probe is None and self.device.type == "cuda":
            self.probe = MemoryProbe(self.device)
        if self.probe is None:
            self.grow_batch = False

    def to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """A host tensor on the compute device; on CUDA through pinned memory without blocking, so the host
        prepares the next batch while the GPU still works on this one."""
        if self.device.type == "cuda" and tensor.device.type == "cpu":
            return tensor.pin_memory().to(self.device, non_blocking=True)
        return tensor.to(self.device)

    def _grow(self, items: int, start: int) -> None:
        used = max(0, self.probe.peak() - start)
        self._per_item = max(self._per_item, used / max(1, items))
        if self._per_item <= 0:
            return
        fits = int(self.probe.available() * self.memory_fraction / self._per_item)
        wanted = min(self.max_batch_size, max(self.batch_size, fits))
        if wanted > self.batch_size:
            self.batch_size = wanted

    @property
    def precision(self) -> str:
        return "bf16" if self.device.type == "cuda" and self.bf16_on_cuda else "fp32"

    @contextlib.contextmanager
    def autocast(self) -> Iterator[None]:
        if self.device.type == "cuda" and self.bf16_on_cuda:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                yield
        else:
            yield

    def _free(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def run_chunks(self, n: int, fn: Callable[[int, int], None]) -> None:
        """Call ``fn(start, stop)`` over ``range(n)`` in chunks of at most ``batch_size``.

        ``fn`` must only publish its results once it returns (a chunk may be retried). On out-of-memory
        the batch size is halved for the rest of the run; at batch size 1 the work falls back to CPU.
        """
        start = 0
        while start < n:
            stop = min(n, start + max(1, self.batch_size))
            try:
                baseline = self.probe.start() if self.grow_batch else 0
                with self.autocast():
                    fn(start, stop)
                if self.grow_batch:
                    self._grow(stop - start, baseline)
            except Exception as error:  # noqa: BLE001 - only out-of-memory is handled, others re-raised
                if not is_out_of_memory(error):
                    raise
                self._free()
                self.grow_batch = False  # the memory estimate was wrong: keep to what has worked
                if stop - start > 1:
                    self.batch_size = max(1, (stop - start) // 2)
                    self.notes.append(f"out of memory at batch size {stop - start}; retrying with {self.batch_size}")
                    continue
                if self.device.type != "cpu":
                    self.fall_back_to_cpu(f"out of memory on {self.device} even at batch size 1")
                    continue
                raise KnowledgeSAMError(
                    "out of memory on the CPU even at batch size 1; free memory or use a smaller model"
                ) from error
            start = stop

    def fall_back_to_cpu(self, why: str) -> None:
        message = f"{why}; continuing on the CPU (slower)"
        warnings.warn(message, RuntimeWarning, stacklevel=3)
        self.notes.append(message)
        self.device = torch.device("cpu")
        if self.on_fallback is not None:
            self.on_fallback(self.device)
