"""The image encoder and the heads on OpenVINO: the fastest CPU runtime measured here.

Why OpenVINO first: on the development machine (2 shared Xeon cores) it ran the TinyViT 3.1–3.9× faster than
eager PyTorch where ONNX Runtime reached 2.0–2.2×, with the same embedding to 4e-6 (``bench/speed.py``);
MedSAM's own Slicer plugin uses it for the same reason. How it is run, and why:

* the cached ONNX graph (:mod:`.onnx_export`) is read and fixed to one slice per request: a static shape lets
  OpenVINO fuse and plan memory (dynamic batch measured 15–20 % slower);
* ``PERFORMANCE_HINT=THROUGHPUT`` with the user's thread count: OpenVINO splits the cores into streams and the
  slices of a batch run as parallel requests (faster than one request over all cores for a batch of slices);
* ``INFERENCE_PRECISION_HINT=f32``: on CPUs with bf16 units OpenVINO would otherwise compute in bf16, which
  changes masks; the CPU engine must give the masks eager PyTorch gives;
* ``CACHE_DIR``: the compiled network is cached next to the graph, so a later process compiles faster.

The heads (:class:`OpenVinoHeads`: 4.6× eager for ``lite``'s, 6.6× for ``small``'s on 2 threads) run in one request
with a free batch dimension: their batch is the (slice, structure) pairs of a step, which varies.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch

from .onnx_export import export_encoder, export_heads, installed, onnx_cache_dir

__all__ = ["OpenVinoEncoder", "OpenVinoHeads", "runtime_available", "compile_properties"]


def runtime_available() -> bool:
    return installed("openvino")


def compile_properties(threads: int, cache_dir: Path | None, hint: str = "THROUGHPUT") -> dict[str, object]:
    """The CPU plugin's settings (see the module docstring for why each)."""
    properties: dict[str, object] = {"INFERENCE_NUM_THREADS": int(threads), "INFERENCE_PRECISION_HINT": "f32",
                                     "PERFORMANCE_HINT": hint}
    if cache_dir is not None:
        properties["CACHE_DIR"] = str(cache_dir)
    return properties


class OpenVinoEncoder:
    """Callable like the image encoder (B×3×S×S normalised images → B×C×G×G) on OpenVINO's CPU plugin."""

    name = "openvino"

    def __init__(self, encoder: torch.nn.Module, image_size: int, *, threads: int | None = None,
                 cache_dir: str | Path | None = None, salt: str = "") -> None:
        """Arguments:
          encoder: the PyTorch image encoder (exported once per fingerprint, then read from the cache).
          image_size: S, the square input side.
          threads: CPU threads over all streams (default: torch's, i.e. the cores the user gave the process).
          cache_dir: where exported graphs (and OpenVINO's compiled blobs, in ``openvino/``) live.
          salt: what else the graph depends on (the model's config), for its fingerprint.
        """
        import openvino as ov

        folder = Path(cache_dir or onnx_cache_dir())
        self.path, self.exported = export_encoder(encoder, image_size, folder, salt)
        self.fingerprint = self.path.stem.split("_", 1)[1]
        self.threads = int(threads or torch.get_num_threads())
        core = ov.Core()
        network = core.read_model(str(self.path))
        network.reshape({network.inputs[0]: [1, 3, image_size, image_size]})
        self.compiled = core.compile_model(network, "CPU", compile_properties(self.threads, folder / "openvino"))
        self.precision = str(self.compiled.get_property("INFERENCE_PRECISION_HINT"))
        requests = int(self.compiled.get_property("OPTIMAL_NUMBER_OF_INFER_REQUESTS"))
        self._queue = ov.AsyncInferQueue(self.compiled, max(1, requests))
        self._outputs: dict[int, np.ndarray] = {}
        self._queue.set_callback(self._collect)
        self._lock = threading.Lock()  # one batch at a time through the queue

    def _collect(self, request, index: int) -> None:
        self._outputs[index] = request.get_output_tensor(0).data.copy()  # the request's buffer is reused

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        array = images.detach().to("cpu", torch.float32).contiguous().numpy()
        with self._lock:
            self._outputs.clear()
            for i in range(array.shape[0]):
                self._queue.start_async({0: array[i:i + 1]}, i)
            self._queue.wait_all()
            out = np.concatenate([self._outputs[i] for i in range(array.shape[0])])
            self._outputs.clear()
        return torch.from_numpy(out).to(images.dtype)


class OpenVinoHeads:
    """Callable like ``KSAM.decode`` on tensors: (IE, SE, DE_0, DE_1), each B×C×G×G → (B×1×S×S logits, B×k IoU)."""

    name = "openvino"

    def __init__(self, model: torch.nn.Module, *, threads: int | None = None,
                 cache_dir: str | Path | None = None) -> None:
        import openvino as ov

        folder = Path(cache_dir or onnx_cache_dir())
        self.path, self.exported = export_heads(model, folder)
        self.threads = int(threads or torch.get_num_threads())
        properties = compile_properties(self.threads, folder / "openvino", hint="LATENCY")
        self.compiled = ov.Core().compile_model(str(self.path), "CPU", properties)
        self._request = self.compiled.create_infer_request()
        self._lock = threading.Lock()

    def __call__(self, ie: torch.Tensor, *reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """IE and the reference tensors (SE, DE_0, DE_1[, box]: ``KSAM.head_inputs``)."""
        feed = {i: t.detach().to("cpu", torch.float32).contiguous().numpy() for i, t in enumerate((ie, *reference))}
        with self._lock:
            out = self._request.infer(feed)
            logits, iou = (np.array(out[i], copy=True) for i in range(2))
        return torch.from_numpy(logits), torch.from_numpy(iou)
