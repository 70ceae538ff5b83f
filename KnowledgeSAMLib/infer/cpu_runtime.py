"""Which runtime runs the image encoder on the CPU: OpenVINO, ONNX Runtime, or eager PyTorch.

Why here, once: the engine calls :func:`use_cpu_runtime` for every request (``EngineOptions.cpu_runtime``), so the
CLI, Slicer (through the Segmenter) and direct ``infer.segment`` users all get the fast CPU path, and a runtime
that is missing or fails says so in one line and leaves the encoder in PyTorch (never an error: a segmentation
must not fail for want of an accelerator). PyTorch stays the reference: the runtimes serve only calls without
gradients on the CPU (:attr:`KSAM.encoder_runtime`), so training is unaffected.

``auto`` uses a runtime only where it pays (:func:`runtime_pays`): the encoder must be most of the per-slice time.
Measured on 2 CPU threads (``bench/speed.py``): LiteMedSAM's TinyViT (``lite``) 3.1–3.9× faster on OpenVINO,
and it is ~80 % of a slice; the ``small`` ViT at 128 px is 2.2× faster but only ~25 % of a slice (its heads
dominate), so the runtime's import and compile (~1 s per process) would cost the default model's one-second cases
more than they save.
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
    if name == "openvino":
        from . import openvino_encoder as module

        return module.runtime_available, module.OpenVinoEncoder
    from . import onnxruntime_encoder as module

    return module.runtime_available, module.OnnxEncoder


def available_runtimes() -> list[str]:
    """The runtimes importable here that can also export (``onnx`` installed), fastest first."""
    from .onnx_export import exporter_available

    if not exporter_available():
        return []
    return [name for name in RUNTIME_ORDER if _backend(name)[0]()]


def runtime_pays(model: Any) -> bool:
    """Whether ``auto`` moves this model's encoder to a runtime: TinyViT encoders and ViTs at 256 px or more."""
    config = getattr(model, "config", None)
    if config is None:
        return False
    return getattr(config, "encoder", "vit") == "tiny_vit" or int(getattr(config, "image_size", 0)) >= 256


def _missing(runtime: str) -> str:
    from .onnx_export import exporter_available

    if not exporter_available():
        return "the onnx package"
    return "onnxruntime" if runtime == "onnxruntime" else "openvino"


def accelerate(model: Any, device: torch.device | str = "cpu", runtime: str = "auto", *, threads: int | None = None,
               cache_dir: str | Path | None = None, quiet: bool = False) -> str:
    """Run ``model``'s image encoder on ``runtime`` (``auto``: the fastest installed) for inference on the CPU.

    Returns the runtime now serving the encoder: ``"openvino"``, ``"onnxruntime"`` or ``"torch"`` (other devices,
    ``runtime="torch"``, nothing installed, or a failed export: the last two say so in one line).
    """
    if runtime not in CPU_RUNTIMES:
        raise ValueError(f"cpu runtime must be one of {', '.join(CPU_RUNTIMES)}, not {runtime!r}")
    if torch.device(device).type != "cpu" or not hasattr(model, "encoder_runtime"):
        return "torch"
    if runtime == "torch":
        model.encoder_runtime = None
        return "torch"
    wanted = list(RUNTIME_ORDER) if runtime == "auto" else [runtime]
    current = model.encoder_runtime
    threads = int(threads or torch.get_num_threads())
    if current is not None and current.name in wanted and getattr(current, "threads", threads) == threads:
        return current.name
    usable = [name for name in wanted if name in available_runtimes()]
    if not usable:
        _say(f"knowledgesam: {_missing(wanted[0])} is not installed: the image encoder runs in PyTorch on the CPU "
             f"(`{_INSTALL}` for about three times the speed)", quiet)
        model.encoder_runtime = None
        return "torch"
    try:
        built = _backend(usable[0])[1](model.image_encoder, int(model.config.image_size), threads=threads,
                                       cache_dir=cache_dir)
    except Exception as error:  # export or compile errors must never stop a segmentation
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        _say(f"knowledgesam: the image encoder could not run on {usable[0]} ({reason}): it runs in PyTorch", quiet)
        model.encoder_runtime = None
        return "torch"
    model.encoder_runtime = built
    return built.name


def use_cpu_runtime(model: Any, device: torch.device | str, choice: str = "auto", *, quiet: bool = False) -> str:
    """The engine's entry: ``choice`` as :class:`EngineOptions` gives it; ``auto`` only where it pays."""
    if choice == "auto" and not runtime_pays(model):  # a runtime the caller set up stays
        current = getattr(model, "encoder_runtime", None) if torch.device(device).type == "cpu" else None
        return current.name if current is not None else "torch"
    return accelerate(model, device, choice, quiet=quiet)
