"""Which runtime runs the image encoder and the heads on the CPU: OpenVINO, ONNX Runtime, or eager PyTorch.

Why here, once: the engine calls :func:`use_cpu_runtime` for every request (``EngineOptions.cpu_runtime``), so the
CLI, Slicer (through the Segmenter) and direct ``infer.segment`` users all get the fast CPU path, and a runtime
that is missing or fails says so in one line and leaves the encoder in PyTorch (never an error: a segmentation
must not fail for want of an accelerator). PyTorch stays the reference: the runtimes serve only calls without
gradients on the CPU (:attr:`KSAM.encoder_runtime`, :attr:`KSAM.heads_runtime`), so training is unaffected.

``auto`` uses a runtime where it pays (:func:`runtime_pays`): every model at 128 px or more. Measured on 2 shared
CPU threads: LiteMedSAM's TinyViT (``lite``) 3.1–3.9× faster on OpenVINO and its heads 4.6×; the default ``small``
model segments the 34-slice hippocampus case in 5 s instead of 21–26 s (heads 6.6×, encoder 2.2×) with the same
masks, for a one-off export (~9 s, once per model and machine) and ~1–3 s of compiling per process. The 32–64 px
test configs (``tiny``, ``lite_tiny``) stay in PyTorch: nothing to win, and tests would export every random model.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from ..choices import CPU_RUNTIMES

__all__ = ["CPU_RUNTIMES", "RUNTIME_ORDER", "accelerate", "available_runtimes", "runtime_pays", "use_cpu_runtime"]

logger = logging.getLogger(__name__)
RUNTIME_ORDER = ("openvino", "onnxruntime")  # auto's preference, fastest first
_INSTALL = "pip install openvino onnx"
_SAID: set[str] = set()  # one line per message and process: a batch of 100 targets says it once


def _say(message: str, quiet: bool) -> None:
    if quiet or message in _SAID:
        return
    _SAID.add(message)
    logger.warning("%s", message)


def _backend(name: str):
    """``(available, Encoder, Heads)`` of a runtime, imported only when asked for."""
    if name == "openvino":
        from . import openvino_backend as module

        return module.runtime_available, module.OpenVinoEncoder, module.OpenVinoHeads
    from . import onnxruntime_backend as module

    return module.runtime_available, module.OnnxEncoder, module.OnnxHeads


def available_runtimes() -> list[str]:
    """The runtimes importable here that can also export (``onnx`` installed), fastest first."""
    from .onnx_export import exporter_available

    if not exporter_available():
        return []
    return [name for name in RUNTIME_ORDER if _backend(name)[0]()]


PAYS_FROM_SIZE = 128  # px: small (128), lite (256), vit_b (512); not the test configs tiny (64), lite_tiny (32)


def runtime_pays(model: Any) -> bool:
    """Whether ``auto`` moves this model's encoder and heads to a runtime: models of 128 px or more."""
    config = getattr(model, "config", None)
    return config is not None and int(getattr(config, "image_size", 0)) >= PAYS_FROM_SIZE


def _missing(runtime: str) -> str:
    from .onnx_export import exporter_available

    if not exporter_available():
        return "the onnx package"
    return "onnxruntime" if runtime == "onnxruntime" else "openvino"


def _current(runtime, wanted: list[str], threads: int) -> bool:
    return runtime is not None and runtime.name in wanted and getattr(runtime, "threads", threads) == threads


def _reason(error: Exception) -> str:
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def accelerate(model: Any, device: torch.device | str = "cpu", runtime: str = "auto", *, threads: int | None = None,
               cache_dir: str | Path | None = None, quiet: bool = False) -> str:
    """Run ``model``'s image encoder and heads on ``runtime`` (``auto``: the fastest installed) for inference on
    the CPU.

    Returns the runtime now serving the encoder: ``"openvino"``, ``"onnxruntime"`` or ``"torch"`` (other devices,
    ``runtime="torch"``, nothing installed, or a failed export: the last two say so in one line). Heads that cannot
    be exported stay in PyTorch (one line) while the encoder runs on the runtime; models without separate heads
    (no ``heads_runtime``) accelerate their encoder only.
    """
    if runtime not in CPU_RUNTIMES:
        raise ValueError(f"cpu runtime must be one of {', '.join(CPU_RUNTIMES)}, not {runtime!r}")
    if torch.device(device).type != "cpu" or not hasattr(model, "encoder_runtime"):
        return "torch"
    has_heads = hasattr(model, "heads_runtime")
    if runtime == "torch":
        model.encoder_runtime = None
        if has_heads:
            model.heads_runtime = None
        return "torch"
    wanted = list(RUNTIME_ORDER) if runtime == "auto" else [runtime]
    threads = int(threads or torch.get_num_threads())
    encoder_ok = _current(model.encoder_runtime, wanted, threads)
    if encoder_ok and (not has_heads or _current(model.heads_runtime, wanted, threads)):
        return model.encoder_runtime.name
    usable = [name for name in wanted if name in available_runtimes()]
    if not usable:
        _say(f"knowledgesam: {_missing(wanted[0])} is not installed: the image encoder runs in PyTorch on the CPU "
             f"(`{_INSTALL}` for about three times the speed)", quiet)
        accelerate(model, device, "torch")
        return "torch"
    _, encoder_type, heads_type = _backend(usable[0])
    if not encoder_ok:
        try:
            model.encoder_runtime = encoder_type(model.image_encoder, int(model.config.image_size), threads=threads,
                                                 cache_dir=cache_dir, salt=repr(model.config))
        except Exception as error:  # export or compile errors must never stop a segmentation
            _say(f"knowledgesam: the image encoder could not run on {usable[0]} ({_reason(error)}): "
                 "it runs in PyTorch", quiet)
            accelerate(model, device, "torch")
            return "torch"
    if has_heads and not _current(model.heads_runtime, wanted, threads):
        try:
            model.heads_runtime = heads_type(model, threads=threads, cache_dir=cache_dir)
        except Exception as error:  # noqa: BLE001 - the encoder keeps its runtime; the heads stay in PyTorch
            _say(f"knowledgesam: the heads could not run on {usable[0]} ({_reason(error)}): they run in PyTorch",
                 quiet)
            model.heads_runtime = None
    return model.encoder_runtime.name


def use_cpu_runtime(model: Any, device: torch.device | str, choice: str = "auto", *, quiet: bool = False) -> str:
    """The engine's entry: ``choice`` as :class:`EngineOptions` gives it; ``auto`` only where it pays."""
    if choice == "auto" and not runtime_pays(model):  # a runtime the caller set up stays
        current = getattr(model, "encoder_runtime", None) if torch.device(device).type == "cpu" else None
        return current.name if current is not None else "torch"
    return accelerate(model, device, choice, quiet=quiet)
