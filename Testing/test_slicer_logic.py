"""``KnowledgeSAMLogic`` (the console API of the Slicer module) on slicer-core, outside Slicer.

slicer-core has MRML but not the scripted-module base classes, the parameter node wrapper, Qt or
``slicer.app``. The Logic is GUI-free, so importing KnowledgeSAM.py with minimal stand-ins for those
(Testing/slicer_stubs.py) runs its real code: argument order, model loading and caching, delegation to
KnowledgeSAMLib.mrml. The panel's behaviour is tested through its presenter (test_slicer_panel.py); the Qt
widget itself and the in-Slicer self-tests need real Slicer (``Slicer --testing``, see docs/slicer.md).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")

from KnowledgeSAMLib import mrml  # noqa: E402
from KnowledgeSAMLib.errors import InputError  # noqa: E402

from slicer_stubs import load_module, stub_slicer_python_layer  # noqa: E402
from test_slicer_mrml import add_segment, add_volume, copy_engine, new_segmentation, segment_state  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture()
def KnowledgeSAM(monkeypatch):
    stub_slicer_python_layer(monkeypatch)
    return load_module(monkeypatch, "KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")


@pytest.fixture()
def nodes():
    scene = mrml.headless_scene()
    rng = np.random.default_rng(2)
    volume = add_volume(scene, rng.normal(0, 10, (8, 32, 32)).astype(np.int16), np.diag([0.7, 0.7, 2.0, 1.0]), "ct")
    reference = new_segmentation(scene, volume, "reference")
    zz, yy, xx = np.mgrid[:8, :32, :32]
    disc = ((yy - 16) ** 2 + (xx - 15) ** 2 < 40) & (zz == 4)
    kidney = add_segment(reference, disc.astype(np.uint8), volume, "kidney", (0.7, 0.3, 0.2))
    return scene, volume, reference, kidney


def test_logic_segment_console_api_with_stand_in_engine(KnowledgeSAM, nodes):
    scene, volume, reference, kidney = nodes
    logic = KnowledgeSAM.KnowledgeSAMLogic()
    output = new_segmentation(scene, volume, "existing")
    other = add_segment(output, np.ones((8, 32, 32), np.uint8), volume, "body", (0.1, 0.1, 0.1))
    before = segment_state(output)[other]
    calls = []
    result = logic.segment(volume, volume, reference, ["kidney"], output, 4, "axial", "anchor", "cpu",
                           lambda done, total: calls.append(done), None, engine=copy_engine)
    assert result is output and calls == [1]
    assert segment_state(output)[other] == before
    segment_id = output.GetSegmentation().GetSegmentIdBySegmentName("kidney")
    np.testing.assert_array_equal(
        mrml.labels_from_segmentation_node(output, [segment_id], volume).layers[0] != 0,
        mrml.labels_from_segmentation_node(reference, [kidney], volume).layers[0] != 0)
    with pytest.raises(InputError, match=r"'kidney' is empty in the reference labels on slice\(s\) 0"):
        logic.segment(volume, volume, reference, ["kidney"], referenceSliceIndex=0, engine=copy_engine)


def test_logic_with_real_engine_and_cached_model(KnowledgeSAM, nodes, monkeypatch):
    pytest.importorskip("torch")
    from KnowledgeSAMLib.model import registry

    scene, volume, reference, kidney = nodes
    loads = []
    real_resolve = registry.resolve_model

    def counting_resolve(name, sam_checkpoint=None, **kwargs):
        loads.append(name)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return real_resolve(name, sam_checkpoint=sam_checkpoint, **kwargs)

    monkeypatch.setattr(registry, "resolve_model", counting_resolve)
    mrml.shared_models().clear()
    logic = KnowledgeSAM.KnowledgeSAMLogic()
    first = logic.segment(volume, None, reference, [], referenceSliceIndex=4, mode="anchor", device="cpu", model="tiny")
    second = logic.segment(volume, volume, reference, ["kidney"], mode="propagate", device="cpu", model="tiny")
    assert loads == ["tiny"], "the model must be loaded once and reused"
    assert first is not second and first.GetName() == "ct KnowledgeSAM" and second.GetName() == "ct KnowledgeSAM_1"
    for output in (first, second):
        labels = mrml.labels_from_segmentation_node(output, None, volume)
        assert [s.name for s in labels.segments] == ["kidney"]
        np.testing.assert_array_equal(labels.layers[0][4] != 0,
                                      mrml.labels_from_segmentation_node(reference, None, volume).layers[0][4] != 0)
    mrml.shared_models().clear()


def test_batch_script_encodes_the_reference_once_for_all_targets(KnowledgeSAM, monkeypatch, tmp_path, capsys):
    """KnowledgeSAMBatch.py through the Logic's one Segmenter: N targets, one reference encoding."""
    pytest.importorskip("torch")
    from KnowledgeSAMLib.model import registry

    from test_infer_fakes import ThresholdModel, blob_volume
    from test_slicer_helpers import load_batch_script

    scene = mrml.headless_scene()
    spacing = np.diag([0.8, 0.8, 2.0, 1.0])
    atlas, atlas_labels = blob_volume(shape=(14, 40, 48), seed=1, shift=(1, 2, -1))
    reference = add_volume(scene, atlas.array, spacing, "atlas")
    segmentation = new_segmentation(scene, reference, "atlas labels")
    add_segment(segmentation, atlas_labels.mask("bright").astype(np.uint8), reference, "bright")
    nodes = {tmp_path / "atlas.nrrd": reference, tmp_path / "atlas.seg.nrrd": segmentation}
    for seed in (3, 4, 5):
        nodes[tmp_path / f"case{seed}.nrrd"] = add_volume(scene, blob_volume(shape=(10, 40, 48), seed=seed)[0].array,
                                                          spacing, f"case{seed}")
    for path in nodes:
        path.write_bytes(b"stands for the node")
    load = {str(path): node for path, node in nodes.items()}.__getitem__

    model = ThresholdModel(image_size=32)
    monkeypatch.setattr(registry, "resolve_model", lambda name, sam_checkpoint=None: model)
    mrml.shared_models().clear()
    batch = load_batch_script()
    targets = [str(tmp_path / f"case{seed}.nrrd") for seed in (3, 4, 5)]
    args = batch.parseArguments(["--target", *targets, "--reference", str(tmp_path / "atlas.nrrd"),
                                 "--reference-segmentation", str(tmp_path / "atlas.seg.nrrd"), "--mode", "volume",
                                 "--device", "cpu", "--model", "fake", "--output", str(tmp_path / "out") + "/"])
    plan = batch.planOutputs(args.target, args.output)
    assert batch.segmentAll(args, plan, KnowledgeSAM.KnowledgeSAMLogic(), load, load) == batch.EXIT_OK, \
        capsys.readouterr().err
    assert all(Path(output).exists() for _, output in plan)
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 1  # outputs removed again

    alone = ThresholdModel(image_size=32)  # what one target costs on its own: its slices and the reference's
    case3 = add_volume(scene, blob_volume(shape=(10, 40, 48), seed=3)[0].array, spacing, "case3")  # the batch removed it
    prepared = mrml.prepare_inputs(case3, reference, segmentation, None, mode="volume", device="cpu")
    reference_slices = mrml.run_engine(prepared, mrml.Segmenter(alone)).provenance["counts"]["reference_slices_encoded"]
    assert reference_slices > 0 and alone.encoded_images == reference_slices + 10
    assert model.encoded_images == reference_slices + 3 * 10, "the reference must be encoded once for all targets"
    mrml.shared_models().clear()
