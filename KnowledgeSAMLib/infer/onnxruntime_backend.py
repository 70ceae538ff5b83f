"""The image encoder and the heads on ONNX Runtime: the second CPU runtime (:mod:`.cpu_runtime` prefers OpenVINO).

Why: the encoder is nearly all of the compute (LiteMedSAM's TinyViT: ~38 GFLOP per 256² slice against a few for
the heads), and eager PyTorch on a CPU runs it at about half the speed ONNX Runtime does (OpenVINO: a third).
PyTorch stays the reference and the training path; this only replaces ``model.image_encoder`` for inference on
the CPU. The graph comes from :func:`.onnx_export.export_encoder` (cached per encoder fingerprint).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from .onnx_export import export_encoder, export_heads, installed, onnx_cache_dir

__all__ = ["OnnxEncoder", "OnnxHeads", "onnx_cache_dir", "runtime_available"]


def _session(path: Path, threads: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # ENABLE_ALL measured no faster than EXTENDED on the TinyViT and both give the same embedding (|Δ| 3e-6)
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def runtime_available() -> bool:
    return installed("onnxruntime")


class OnnxEncoder:
    """Callable like the image encoder (B×3×S×S normalised images → B×C×G×G) on ONNX Runtime, CPU."""

    name = "onnxruntime"

    def __init__(self, encoder: torch.nn.Module, image_size: int, *, threads: int | None = None,
                 cache_dir: str | Path | None = None, salt: str = "") -> None:
        """Arguments:
          encoder: the PyTorch image encoder (exported once per fingerprint, then loaded from the cache).
          image_size: S, the square input side the graph is exported for.
          threads: intra-op threads (default: torch's, i.e. the cores the user gave the process).
          cache_dir: where exported graphs live (default: the user cache's ``onnx`` folder).
          salt: what else the graph depends on (the model's config), for its fingerprint.
        """
        self.path, self.exported = export_encoder(encoder, image_size, cache_dir, salt)
        self.fingerprint = self.path.stem.split("_", 1)[1]
        self.threads = int(threads or torch.get_num_threads())
        self.session = _session(self.path, self.threads)

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        out = self.session.run(["embedding"], {"image": array})[0]
        return torch.from_numpy(np.ascontiguousarray(out)).to(images.dtype)



class OnnxHeads:
    """Callable like ``KSAM.decode`` on tensors: (IE, SE, DE_0, DE_1), each B×C×G×G → (B×1×S×S logits, B×k IoU)."""

    name = "onnxruntime"

    def __init__(self, model: torch.nn.Module, *, threads: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        self.path, self.exported = export_heads(model, cache_dir)
        self.threads = int(threads or torch.get_num_threads())
        self.session = _session(self.path, self.threads)

    def __call__(self, ie: torch.Tensor, *reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """IE and the reference tensors (SE, DE_0, DE_1[, box]: ``KSAM.head_inputs``)."""
        from .onnx_export import HEAD_INPUTS

        tensors = (ie, *reference)
        feed = {n: t.detach().to("cpu", torch.float32).contiguous().numpy() for n, t in zip(HEAD_INPUTS, tensors)}
        logits, iou = self.session.run(["logits", "iou"], feed)
        return torch.from_numpy(np.ascontiguousarray(logits)), torch.from_numpy(np.ascontiguousarray(iou))
