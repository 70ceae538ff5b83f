"""Cold start: segmenting with a model whose encoder has no LoRA never imports peft or transformers, and a runtime
whose graph is already cached imports neither ``onnx`` nor the runtime it does not use.

Why: peft imports transformers, which costs seconds before the first slice; only a model with LoRA needs it.
``import onnx`` alone takes 0.8 s, and it is only needed to export a graph.
Each check runs in a fresh interpreter (``sys.modules`` of this one has seen everything).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

_RUN = r"""
import json, sys, torch
torch.set_num_threads(1)
from KnowledgeSAMLib import build_model, load_model, save_model
from KnowledgeSAMLib.cli.demo import _phantom
from KnowledgeSAMLib.infer import SegmentRequest, segment
from KnowledgeSAMLib.model.config import get_config

config = get_config(sys.argv[1]).replace(encoder_training=sys.argv[2])
save_model(build_model(config, pretrained=False), sys.argv[3])
model = load_model(sys.argv[3])
reference, labels = _phantom(5001, (4, 32, 32))
target, _ = _phantom(5002, (4, 32, 32))
segment(SegmentRequest(target, reference, labels, device="cpu"), model)
print(json.dumps({name: name in sys.modules for name in ("peft", "transformers", "openvino", "onnxruntime")}))
"""

_ACCELERATED = r"""
import json, sys, torch
torch.set_num_threads(1)
from KnowledgeSAMLib import build_model, load_model, save_model
from KnowledgeSAMLib.cli.demo import _phantom
from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment

if sys.argv[2] == "save":
    save_model(build_model("lite_tiny", pretrained=False), sys.argv[1])
model = load_model(sys.argv[1])
reference, labels = _phantom(5001, (4, 32, 32))
target, _ = _phantom(5002, (4, 32, 32))
result = segment(SegmentRequest(target, reference, labels, device="cpu",
                                options=EngineOptions(cpu_runtime="openvino")), model)
assert result.provenance["encoder_runtime"] == "openvino", result.provenance
print(json.dumps({name: name in sys.modules for name in ("onnx", "onnxruntime", "openvino")}))
"""

_CLI = r"""
import json, sys
from KnowledgeSAMLib.cli import main
code = main(sys.argv[1:])
print(json.dumps({"code": code, **{name: name in sys.modules for name in ("peft", "transformers")}}))
"""


def _imports(script: str, *args: str, env: dict | None = None) -> dict:
    done = subprocess.run([sys.executable, "-c", script, *args], cwd=ROOT, capture_output=True, text=True, timeout=300,
                          env=env)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("config,training", [("small", "full"), ("lite_tiny", "frozen")])
def test_a_model_without_lora_loads_and_segments_without_peft(config, training, tmp_path):
    seen = _imports(_RUN, config, training, str(tmp_path / "model"))
    assert not seen["peft"] and not seen["transformers"]


def test_a_lora_model_does_import_peft(tmp_path):
    """The other side of the check above: it can see peft when peft is used."""
    assert _imports(_RUN, "tiny", "lora", str(tmp_path / "model"))["peft"]


def test_segment_command_with_the_default_model_imports_neither(tmp_path):
    from KnowledgeSAMLib.cli.demo import _phantom
    from KnowledgeSAMLib.data.io import write_image, write_labels
    from KnowledgeSAMLib.model.registry import default_model_dir

    if not (default_model_dir() / "config.json").is_file():
        pytest.skip("no embedded default model")
    from KnowledgeSAMLib.model.weights import load_model

    if load_model(default_model_dir()).config.encoder_training == "lora":
        pytest.skip("the default model has LoRA: it needs peft")
    reference, labels = _phantom(5001, (4, 32, 32))
    target, _ = _phantom(5002, (4, 32, 32))
    write_image(reference, tmp_path / "ref.nrrd")
    write_labels(labels, tmp_path / "ref.seg.nrrd")
    write_image(target, tmp_path / "target.nrrd")
    seen = _imports(_CLI, "segment", "--target", str(tmp_path / "target.nrrd"), "--reference", str(tmp_path / "ref.nrrd"),
                    "--reference-labels", str(tmp_path / "ref.seg.nrrd"), "--output", str(tmp_path / "out.seg.nrrd"),
                    "--quiet", "--device", "cpu")
    assert seen == {"code": 0, "peft": False, "transformers": False}


def test_a_cached_openvino_graph_needs_neither_onnx_nor_onnxruntime(tmp_path):
    from KnowledgeSAMLib.infer.cpu_runtime import available_runtimes

    if "openvino" not in available_runtimes():
        pytest.skip("openvino (with onnx) is not installed")
    env = {**os.environ, "KNOWLEDGESAM_CACHE": str(tmp_path / "cache")}
    first = _imports(_ACCELERATED, str(tmp_path / "model"), "save", env=env)
    assert first["onnx"] and first["openvino"]  # the first process exports the graph: it does need onnx
    again = _imports(_ACCELERATED, str(tmp_path / "model"), "load", env=env)
    assert again == {"onnx": False, "onnxruntime": False, "openvino": True}
