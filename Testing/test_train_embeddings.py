"""Training on a frozen encoder: views (whole slice / ROI, randomisation), the embedding cache, and the trainer
reading it (tiny TinyViT model, CPU)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from KnowledgeSAMLib import build_model
from KnowledgeSAMLib.data.phantoms import make_kidney_phantom
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.model.config import get_config
from KnowledgeSAMLib.train.config import SourceConfig, config_from_dict
from KnowledgeSAMLib.train.embedding_store import attach_embeddings, store_path, encoder_fingerprint
from KnowledgeSAMLib.train.sources import Source, build_source, volume_to_case
from KnowledgeSAMLib.train.views import ViewSpec, draw_view, volume_view


@pytest.fixture(scope="module")
def phantom():
    return make_kidney_phantom(3000, shape=(24, 96, 96))


@pytest.fixture(scope="module")
def frozen():
    torch.manual_seed(0)
    return build_model(get_config("lite_tiny").replace(encoder_training="frozen"), pretrained=False).eval()


def test_plain_slicing_is_the_preset_and_the_square_fit_of_each_kept_slice(phantom):
    """The oracle: the preset's mapping and the aspect-preserving square fit of every slice in the tasks' extent
    plus the margin, computed here directly (a neutral view must add nothing to them)."""
    from KnowledgeSAMLib.data.intensity import get_preset
    from KnowledgeSAMLib.data.resize import SquareFit
    from KnowledgeSAMLib.infer.slicing import axis_view

    image, labels = phantom
    tasks = ["artery", "medulla", "cortex"]
    case = volume_to_case("k", "s", image, labels, tasks, "ct-abdomen", 64)
    view = axis_view(image.shape, image.geometry, "axial")
    present = np.flatnonzero(view.slice_has(labels.layers[0] > 0))
    ks = list(range(max(0, present[0] - 3), min(view.n, present[-1] + 4)))
    assert case.n == len(ks)
    mapping, fit = get_preset("ct-abdomen").fit(image), SquareFit(view.slice_shape, view.spacing_hw, 64)
    for row, k in ((0, ks[0]), (len(ks) // 2, ks[len(ks) // 2])):
        rgb = fit.to_model(mapping.apply(np.ascontiguousarray(view.get(image.array, k))), 1)
        np.testing.assert_array_equal(case.images[row], np.clip(np.rint(rgb * 255.0), 0, 255).astype(np.uint8))
        cortex = fit.to_model(view.get(labels.mask("cortex"), k).astype(np.float32), "area") > 0.5
        np.testing.assert_array_equal(case.masks[row, 2].astype(bool), cortex)


def test_roi_view_magnifies_the_structures_and_max_slices_keeps_negatives(phantom):
    image, labels = phantom
    tasks = ["artery", "medulla", "cortex"]
    whole = volume_view("k", "s", image, labels, tasks, "ct-abdomen", 64, ViewSpec(), np.random.default_rng(0))
    roi = volume_view("k", "s", image, labels, tasks, "ct-abdomen", 64, ViewSpec(roi=True, margin=0.2),
                      np.random.default_rng(0), max_slices=6)
    assert roi.n == 6 and whole.n > 6
    labelled = np.flatnonzero((labels.layers[0] > 0).any(axis=(1, 2)))
    inside = (roi.slice_index >= labelled.min()) & (roi.slice_index <= labelled.max())
    assert inside.sum() == 4 and not inside[0] and not inside[-1]  # two empty margin slices: the negatives
    # a small structure in a large field of view fills much more of an ROI view than of a whole-slice view
    from test_infer_roi import small_structure

    image, labels = small_structure()
    area = lambda spec: volume_view("b", "s", image, labels, ["blob"], "ct-abdomen", 64, spec,  # noqa: E731
                                    np.random.default_rng(0)).masks.sum()
    assert area(ViewSpec(roi=True, margin=0.3)) > 4 * area(ViewSpec())


def test_region_view_crops_one_kidney_of_two(phantom):
    """'region' views look at one separate structure group (as the engine's per-region windows do): either kidney,
    each crop narrower than the box around both, and the kidney fills more of the view."""
    from KnowledgeSAMLib.infer.roi import structure_box
    from KnowledgeSAMLib.infer.slicing import axis_view
    from KnowledgeSAMLib.train.views import _region_box

    image, labels = phantom
    tasks = ["artery", "medulla", "cortex"]
    view = axis_view(image.shape, image.geometry, "axial")
    masks = [labels.mask(t) for t in tasks]
    both = structure_box(masks, view, 0.2)
    spec = ViewSpec(roi=True, margin=0.2, per_region=True)
    boxes = {_region_box(masks, view, spec, np.random.default_rng(seed)) for seed in range(8)}
    assert len(boxes) == 2  # left and right kidney
    for r0, r1, c0, c1 in boxes:
        assert c1 - c0 < 0.8 * (both[3] - both[2])
    union = volume_view("k", "s", image, labels, tasks, "ct-abdomen", 64, ViewSpec(roi=True, margin=0.2),
                        np.random.default_rng(0))
    region = volume_view("k", "s", image, labels, tasks, "ct-abdomen", 64, spec, np.random.default_rng(0))
    assert region.masks.sum() > 1.5 * union.masks.sum() / 2  # per kidney, more pixels than in the union view


def test_recolouring_shades_every_image_and_tints_only_colour_ones(phantom):
    from KnowledgeSAMLib.train.views import _recolour

    rng = np.random.default_rng(0)
    grey = np.repeat(rng.uniform(0.2, 0.8, (2, 16, 16, 1)).astype(np.float32), 3, axis=3)
    shaded = _recolour(grey, ViewSpec(bias=0.3, colour=0.2), np.random.default_rng(1))
    assert np.array_equal(shaded[..., 0], shaded[..., 2]) and not np.allclose(shaded, grey)
    colour = rng.uniform(0.2, 0.8, (2, 16, 16, 3)).astype(np.float32)
    tinted = _recolour(colour, ViewSpec(colour=0.2), np.random.default_rng(1))
    gains = (tinted / colour).reshape(-1, 3)
    assert np.allclose(gains, gains[0], rtol=1e-5) and np.ptp(gains[0]) > 0.01  # one gain per channel
    assert np.array_equal(_recolour(colour, ViewSpec(), rng), colour)  # neutral spec: untouched


def test_randomised_views_are_deterministic_per_seed_and_differ_across_seeds():
    a, b = draw_view(np.random.default_rng(5), roi=True, randomise=1.0), draw_view(np.random.default_rng(5), roi=True,
                                                                                   randomise=1.0)
    c = draw_view(np.random.default_rng(6), roi=True, randomise=1.0)
    assert a == b and a != c
    neutral = draw_view(np.random.default_rng(5), roi=False, randomise=0.0)
    assert neutral.window_scale == 1.0 and neutral.noise == 0.0 and neutral.gamma == 1.0


def test_copies_become_separate_cases(tmp_path):
    src = SourceConfig(kind="kidney_phantom", shape=[16, 64, 64], train_cases=1, val_cases=0, seed=3000, copies=2,
                       randomise=0.8, max_slices=3)
    source = build_source(src, 32, "k")
    assert [c.name for c in source.train] == ["kidney_phantom_3000#0", "kidney_phantom_3000#1"]
    assert not np.array_equal(source.train[0].images, source.train[1].images)


def _source(phantom, size: int) -> Source:
    image, labels = phantom
    case = volume_to_case("k", "s", image, labels, ["medulla", "cortex"], "ct-abdomen", size)
    return Source(name="s", kind="kidney_phantom", weight=1.0, tasks=["medulla", "cortex"], train=[case], val=[])


def test_cached_embeddings_equal_the_encoder_and_the_cache_resumes(phantom, frozen, tmp_path):
    source = _source(phantom, 32)
    case = source.train[0]
    attach_embeddings([source], frozen, tmp_path)
    with torch.no_grad():
        direct = frozen.encode(torch.from_numpy(case.images).permute(0, 3, 1, 2).float() / 255.0)
    np.testing.assert_allclose(case.embeddings.astype(np.float32), direct.numpy(), atol=2e-3, rtol=2e-3)
    # an interrupted fill resumes where it stopped: the rows after "done" are recomputed, the others kept
    path = store_path(tmp_path, source, encoder_fingerprint(frozen))
    sidecar = path.with_suffix(".json")
    store = np.memmap(path, dtype=np.float16, mode="r+", shape=case.embeddings.shape)
    store[3:] = 0
    store.flush()
    sidecar.write_text('{"done": 3}', encoding="utf-8")
    again = _source(phantom, 32)
    calls = []
    real = frozen.encode
    frozen.encode = lambda x: calls.append(len(x)) or real(x)
    try:
        attach_embeddings([again], frozen, tmp_path)
    finally:
        del frozen.encode
    assert sum(calls) == case.n - 3
    np.testing.assert_array_equal(again.train[0].embeddings, case.embeddings)


def test_a_learning_encoder_cannot_use_cached_embeddings(phantom, tmp_path):
    model = build_model("lite_tiny", pretrained=False)  # LoRA: the encoder learns
    with pytest.raises(InputError, match="frozen"):
        attach_embeddings([_source(phantom, 32)], model, tmp_path)


def test_training_on_cached_embeddings_runs_and_validates(tmp_path):
    data = {
        "model": {"name": "lite_tiny", "overrides": {"encoder_training": "frozen", "image_size": 64}},
        "data": {"sources": [{"kind": "kidney_phantom", "shape": [16, 64, 64], "train_cases": 2, "val_cases": 1,
                              "seed": 3000, "max_slices": 4, "randomise": 0.3}],
                 "embedding_cache_dir": str(tmp_path / "emb")},
        "augment": {"enabled": False},
        "optim": {"batch_size": 4, "epochs": 1, "steps_per_epoch": 3, "warmup_steps": 1},
        "validation": {"max_slices_per_case": 2},
        "loss": {"iou_weight": 0.05},
        "run": {"out_dir": str(tmp_path / "run"), "threads": 1, "log_every": 1},
    }
    from KnowledgeSAMLib.train.trainer import Trainer

    result = Trainer(config_from_dict(data, where="test")).fit()
    assert result.steps == 3 and np.isfinite(result.last_loss)
    assert "mean" in result.val
    assert any(p.name.endswith(".f16") for p in (tmp_path / "emb").iterdir())


def test_pair_forward_on_cached_embeddings_equals_running_the_frozen_encoder(frozen):
    from KnowledgeSAMLib.train.trainer import _PairForward

    torch.manual_seed(1)
    target, ref = torch.rand(2, 3, 32, 32), torch.rand(2, 3, 32, 32)
    mask = (torch.rand(2, 1, 32, 32) > 0.5).float()
    net = _PairForward(frozen, with_iou=True)
    with torch.no_grad():
        direct, iou = net(target, ref, mask)
        cached, iou_cached = net(target, ref, mask, frozen.encode(target), frozen.encode(ref))
    torch.testing.assert_close(cached, direct, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(iou_cached, iou, atol=1e-5, rtol=1e-4)
