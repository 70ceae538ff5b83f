"""SquareFit: physical aspect kept, exact inverse grid, masks survive the round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from KnowledgeSAMLib.data.resize import SquareFit


def ellipse(shape, centre, radii) -> np.ndarray:
    yy, xx = np.mgrid[0:shape[0], 0:shape[1]]
    return (((yy - centre[0]) / radii[0]) ** 2 + ((xx - centre[1]) / radii[1]) ** 2 < 1).astype(np.float32)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2 * np.logical_and(a, b).sum() / (a.sum() + b.sum())


def test_sagittal_slice_with_anisotropic_pixels_keeps_physical_aspect():
    fit = SquareFit((60, 512), (5.0, 0.8), 512)  # 300 mm tall, 409.6 mm wide
    assert fit.inner_hw == (375, 512) and fit.pad_hw == (68, 0)
    assert abs(fit.inner_hw[0] / fit.inner_hw[1] - 300 / 409.6) < 2 / 512
    out = fit.to_model(np.ones((60, 512), np.float32))
    assert out.shape == (512, 512)
    assert out[:68].max() == 0 and out[68 + 375:].max() == 0 and out[68:68 + 375].min() > 0.99


def test_square_pixels_fill_the_longer_side_and_pad_symmetrically():
    fit = SquareFit((100, 50), (1.0, 1.0), 64)
    assert fit.inner_hw == (64, 32) and fit.pad_hw == (0, 16)
    assert SquareFit((64, 64), (0.5, 0.5), 64).pad_hw == (0, 0)


@pytest.mark.parametrize("shape,spacing,size", [((512, 512), (0.7, 0.7), 64), ((60, 512), (5.0, 0.8), 256),
                                                 ((35, 50), (1.0, 1.0), 128), ((97, 131), (0.9, 1.3), 96)])
def test_mask_round_trip_recovers_the_original(shape, spacing, size):
    fit = SquareFit(shape, spacing, size)
    mask = ellipse(shape, (shape[0] * 0.45, shape[1] * 0.55), (shape[0] * 0.3, shape[1] * 0.25))
    model = fit.to_model(mask, order="area")
    assert model.shape == (size, size) and 0 <= model.min() and model.max() <= 1
    back = fit.to_original(model, order=1)
    assert back.shape == shape
    assert dice(back > 0.5, mask > 0.5) > 0.97
    # Soft coverage keeps the area: what the mask occupies in mm² is what the model sees.
    area_mm2 = mask.sum() * spacing[0] * spacing[1]
    model_pixel_mm = max(shape[0] * spacing[0], shape[1] * spacing[1]) / size
    assert abs(model.sum() * model_pixel_mm ** 2 / area_mm2 - 1) < 0.03


def test_grid_map_is_exact_on_a_linear_ramp():
    """Bilinear sampling reproduces a linear function exactly, so any mis-registration shows up."""
    fit = SquareFit((30, 50), (2.0, 1.0), 128)
    rows, cols = np.mgrid[0:30, 0:50].astype(np.float64)
    ramp = (3 * rows + 2 * cols).astype(np.float32)
    model = fit.to_model(ramp, order=1)
    mi, mj = np.mgrid[0:128, 0:128]
    rc = fit.to_original_coords(np.stack([mi, mj], -1))
    inside = (rc[..., 0] >= 0) & (rc[..., 0] <= 29) & (rc[..., 1] >= 0) & (rc[..., 1] <= 49)
    np.testing.assert_allclose(model[inside], (3 * rc[..., 0] + 2 * rc[..., 1])[inside], atol=1e-3)
    # ... and back: the model map resampled onto the original grid gives the ramp again.
    model_ramp = (3 * rc[..., 0] + 2 * rc[..., 1]).astype(np.float32)
    back = fit.to_original(model_ramp, order=1)
    assert back.shape == (30, 50)
    # Shrinking is anti-aliased; torch's discrete filter taps are not perfectly symmetric at
    # non-integer scales, which shows as < 0.03 pixel of shift (slopes 3 and 2 per pixel).
    np.testing.assert_allclose(back[2:-2, 2:-2], ramp[2:-2, 2:-2], atol=0.1)
    np.testing.assert_allclose(fit.to_original_coords(fit.to_model_coords([[3.25, 7.5]])), [[3.25, 7.5]])


def test_nearest_keeps_label_values_and_dtype():
    fit = SquareFit((20, 30), (1.0, 1.0), 64)
    labels = np.zeros((20, 30), np.uint8)
    labels[5:15, 5:12], labels[5:15, 18:25] = 1, 3
    model = fit.to_model(labels, order=0)
    assert model.dtype == np.uint8 and set(np.unique(model)) == {0, 1, 3}
    back = fit.to_original(model, order=0)
    np.testing.assert_array_equal(back, labels)


def test_layouts_rgb_stack_and_torch():
    fit = SquareFit((40, 30), (1.0, 1.0), 32)
    rgb = np.random.default_rng(0).random((40, 30, 3)).astype(np.float32)
    out = fit.to_model(rgb)
    assert out.shape == (32, 32, 3)
    for c in range(3):
        np.testing.assert_allclose(out[..., c], fit.to_model(rgb[..., c]), atol=1e-6)
    stack = np.random.default_rng(1).random((5, 40, 30)).astype(np.float32)
    batched = fit.to_model(stack)
    assert batched.shape == (5, 32, 32)
    np.testing.assert_allclose(batched[3], fit.to_model(stack[3]), atol=1e-6)
    cube = np.random.default_rng(2).random((16, 16, 16)).astype(np.float32)  # 16 slices of 16 x 16
    square = SquareFit((16, 16), (1.0, 1.0), 8)
    np.testing.assert_allclose(square.to_model(cube)[5], square.to_model(cube[5]), atol=1e-6)
    channels = square.to_model(np.ascontiguousarray(stack[:3, :16, :16].transpose(1, 2, 0)))
    assert channels.shape == (8, 8, 3)
    logits = torch.randn(2, 1, 32, 32, dtype=torch.float64)
    back = fit.to_original(logits)
    assert isinstance(back, torch.Tensor) and back.shape == (2, 1, 40, 30) and back.dtype == torch.float64
    with pytest.raises(ValueError, match="expected an array"):
        fit.to_model(np.zeros((41, 30)))
    with pytest.raises(ValueError, match="order"):
        fit.to_model(np.zeros((40, 30)), order=3)
