"""The window scan of one image (``infer/scan.py``): windows cover the image and stay bounded, a structure's look is
its contrast and area, and on a photograph ``roi="auto"`` finds a small structure, not a decoy the model also
segments; on a real whole fundus photograph it finds the optic disc the whole-image look misses."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment
from KnowledgeSAMLib.infer import SegmentRequest, segment
from KnowledgeSAMLib.infer.scan import image_scale, look, unlikeness, window_grid

from test_infer_fakes import ThresholdModel, dice


def test_windows_cover_the_slice_overlap_by_half_and_stay_bounded():
    windows = window_grid((100, 150), (40, 40))
    covered = np.zeros((100, 150), dtype=bool)
    for r0, r1, c0, c1 in windows:
        assert (r1 - r0, c1 - c0) == (40, 40) and r1 <= 100 and c1 <= 150
        covered[r0:r1, c0:c1] = True
    assert covered.all()
    assert sorted({w[0] for w in windows})[:2] == [0, 20]  # half a window apart
    many = window_grid((2000, 2000), (10, 10), max_windows=50)
    assert len(many) <= 50 and many[0][1] - many[0][0] > 10  # grown, not thousands of windows
    assert window_grid((30, 30), (64, 64)) == [(0, 30, 0, 30)]


def test_a_look_is_contrast_to_the_ring_and_area():
    plane = np.zeros((60, 60), dtype=np.float32)
    plane[20:30, 20:30] = 10.0
    mask = plane > 5
    scale = image_scale(plane)
    seen = look(plane, mask, scale, area_scale=4.0)
    assert seen.area == 400.0 and seen.contrast[0] == pytest.approx(10.0 / scale[0])
    assert look(plane, np.zeros_like(mask), scale) is None
    dimmer = look(plane * 0.5, mask, scale)
    assert unlikeness(seen, seen) == 0.0 and unlikeness(dimmer, seen) > unlikeness(seen, seen)


def _photograph(shape, disc_centre, decoy=None, seed=0) -> tuple[Image, Labels]:
    """An RGB photograph: reddish background, a small bright disc, and optionally a large decoy of the disc's
    colour (a box ``decoy`` = (r0, r1, c0, c1)) that an intensity-only model also segments."""
    rng = np.random.default_rng(seed)
    h, w = shape
    y, x = np.mgrid[:h, :w]
    disc = (y - disc_centre[0]) ** 2 + (x - disc_centre[1]) ** 2 < 12 ** 2
    rgb = np.zeros((h, w, 3), dtype=np.float64)
    rgb[...] = (150.0, 60.0, 30.0)
    rgb[disc] = (240.0, 220.0, 150.0)
    if decoy is not None:
        rgb[decoy[0]:decoy[1], decoy[2]:decoy[3]] = (240.0, 220.0, 150.0)
    rgb += rng.normal(0, 3, rgb.shape)
    geometry = Geometry(spacing=(0.01, 0.01, 1.0), ndim=2)
    image = Image(np.clip(rgb, 0, 255).astype(np.uint8)[None], geometry, source=f"photo{seed}.png")
    return image, Labels(disc[None, None].astype(np.uint8), geometry, [Segment("disc", 1, 0)],
                         source=f"photo{seed}.seg.nrrd")


def test_auto_on_a_photograph_scans_windows_and_finds_the_small_structure_not_the_decoy():
    torch.manual_seed(0)
    target, truth = _photograph((400, 400), (300, 80), decoy=(40, 160, 220, 380), seed=1)
    reference, ref_labels = _photograph((360, 360), (100, 250), seed=2)
    model = ThresholdModel(image_size=32)
    whole = segment(SegmentRequest(target, reference, ref_labels, roi="none"), model)
    focused = segment(SegmentRequest(target, reference, ref_labels), model)
    record = focused.provenance["roi"]
    assert record["mode"] == "auto" and record["scan_windows"] > 4 and len(record["regions"]) == 1
    x0, y0, _, x1, y1, _ = record["regions"][0]["target"]
    assert x0 <= 68 and 92 <= x1 and y0 <= 288 and 312 <= y1  # the window holds the disc
    disc = truth.layers[0] == 1
    assert dice(focused.labels.layers[0] == 1, disc) > 0.85
    assert dice(whole.labels.layers[0] == 1, disc) < 0.3  # the decoy, segmented too, is most of the whole-image mask


@pytest.fixture(scope="module")
def default_model():
    from KnowledgeSAMLib.model.registry import default_model_dir
    from KnowledgeSAMLib.model.weights import load_model

    if not (default_model_dir() / "config.json").is_file():
        pytest.skip("no embedded default model")
    return load_model(default_model_dir())


def test_a_whole_papila_photograph_of_the_held_out_eye(default_model):
    """Real data: the held-out eye's whole photograph (2576 x 1934, the disc ~1/7 of it), another patient's whole
    photograph as the reference. Measured on 2026-12-07: disc 0.825, cup 0.765; the whole-image look: 0.19, 0.51."""
    from KnowledgeSAMLib.data.datasets import PAPILA_REFERENCE, PAPILA_TEST, load_papila, papila_root

    try:
        papila_root(None)
    except Exception:
        pytest.skip("PAPILA is not beside the repository (../shared/data/papila)")
    torch.set_num_threads(1)
    eye = PAPILA_TEST[0]
    target, truth = load_papila(None, eye, crop=False)
    reference, ref_labels = load_papila(None, PAPILA_REFERENCE[eye], crop=False)
    result = segment(SegmentRequest(target, reference, ref_labels, device="cpu"), default_model)
    assert "scan_windows" in result.provenance["roi"]
    scores = {seg.name: dice(result.labels.mask(seg.name), truth.mask(seg.name)) for seg in truth.segments}
    assert scores["disc"] > 0.75 and scores["cup"] > 0.65, scores
