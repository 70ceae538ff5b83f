"""The unseen phantom family (``kidney-full``, ``fundus-full``): deterministic, anatomically sane, written by
the CLI, and never reachable from training or tuning code.

Cases are small (``matrix``/``slices``/``size`` options) so the whole file runs in a few seconds; the
anatomy of a seed does not depend on those options.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.data.io import read_image, read_labels
from KnowledgeSAMLib.data.unseen_phantoms import make_fundus_full_phantom, make_kidney_full_phantom

REPO = Path(__file__).resolve().parents[1]
KIDNEY_SMALL = {"matrix": 160, "slices": 60}  # thin slices keep the renal arteries connected
FUNDUS_SMALL = {"size": (150, 190)}


@pytest.fixture(scope="module")
def kidney_cases():
    return {seed: make_kidney_full_phantom(seed, **KIDNEY_SMALL) for seed in (3, 11)}


@pytest.fixture(scope="module")
def fundus_cases():
    return {seed: make_fundus_full_phantom(seed, **FUNDUS_SMALL) for seed in range(8)}


# ----------------------------------------------------------------------------------- helpers

def _components(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Connected components (26-connected) and their sizes, largest first (label k+1 has size sizes[k])."""
    labels = sitk.GetArrayFromImage(sitk.RelabelComponent(sitk.ConnectedComponent(
        sitk.GetImageFromArray(mask.astype(np.uint8)), True)))
    return labels, np.bincount(labels.ravel())[1:]


def _dilate(mask: np.ndarray, in_plane_only: bool = False) -> np.ndarray:
    out = mask.copy()
    axes = (1, 2) if in_plane_only else (0, 1, 2)
    for axis in axes:
        lead = [slice(None)] * 3
        trail = [slice(None)] * 3
        lead[axis], trail[axis] = slice(1, None), slice(None, -1)
        out[tuple(lead)] |= mask[tuple(trail)]
        out[tuple(trail)] |= mask[tuple(lead)]
    return out


def _x_mm(image, index: np.ndarray) -> np.ndarray:
    return image.geometry.origin[0] + image.geometry.spacing[0] * index


def _spine_x_mm(image) -> float:
    """Median x (mm) of dense bone in the central third of the image, posterior half of the body."""
    array = image.array
    body_y = np.nonzero((array > -500).any(axis=(0, 2)))[0]
    centre_y = int(np.median(body_y))
    nx = array.shape[2]
    central = array[:, centre_y:, nx // 3: 2 * nx // 3]
    _, _, xs = np.nonzero(central > 300)
    return float(_x_mm(image, xs + nx // 3).mean())


# ----------------------------------------------------------------------------------- determinism

def test_kidney_is_deterministic_per_seed_and_differs_across_seeds(kidney_cases):
    image, labels = make_kidney_full_phantom(3, **KIDNEY_SMALL)
    first_image, first_labels = kidney_cases[3]
    np.testing.assert_array_equal(image.array, first_image.array)
    np.testing.assert_array_equal(labels.layers, first_labels.layers)
    assert image.geometry == first_image.geometry and labels.geometry == first_labels.geometry
    other_image, other_labels = kidney_cases[11]
    assert other_image.geometry != image.geometry  # spacing and coverage are drawn per case
    assert not np.array_equal(other_image.array, image.array)
    assert not np.array_equal(other_labels.layers, labels.layers)


def test_kidney_anatomy_does_not_depend_on_the_grid_options():
    small, _ = make_kidney_full_phantom(5, matrix=48, slices=8)
    larger, _ = make_kidney_full_phantom(5, matrix=64, slices=10)
    fov_small = np.array(small.geometry.spacing[:2]) * 48
    fov_large = np.array(larger.geometry.spacing[:2]) * 64
    np.testing.assert_allclose(fov_small, fov_large)
    assert small.geometry.spacing[2] * 7 == pytest.approx(larger.geometry.spacing[2] * 9)  # same coverage


def test_fundus_is_deterministic_per_seed_and_differs_across_seeds(fundus_cases):
    image, labels = make_fundus_full_phantom(2, **FUNDUS_SMALL)
    np.testing.assert_array_equal(image.array, fundus_cases[2][0].array)
    np.testing.assert_array_equal(labels.layers, fundus_cases[2][1].layers)
    assert image.geometry == fundus_cases[2][0].geometry
    assert not np.array_equal(image.array, fundus_cases[3][0].array)
    assert not np.array_equal(labels.layers, fundus_cases[3][1].layers)


def test_same_arrays_in_a_fresh_process(kidney_cases, fundus_cases):
    """Nothing depends on process state (global RNG, hash seeds, import order)."""
    code = (
        "import hashlib, numpy as np;"
        "from KnowledgeSAMLib.data.unseen_phantoms import make_kidney_full_phantom as k, make_fundus_full_phantom as f;"
        f"a = k(3, matrix={KIDNEY_SMALL['matrix']}, slices={KIDNEY_SMALL['slices']});"
        f"b = f(2, size={FUNDUS_SMALL['size']});"
        "print(*(hashlib.sha256(x.tobytes()).hexdigest() for x in (a[0].array, a[1].layers, b[0].array, b[1].layers)))"
    )
    np.random.seed(12345)  # global state here must not matter either
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    import hashlib

    here = [hashlib.sha256(x.tobytes()).hexdigest() for x in (kidney_cases[3][0].array, kidney_cases[3][1].layers,
                                                              fundus_cases[2][0].array, fundus_cases[2][1].layers)]
    assert out.stdout.split() == here


# ----------------------------------------------------------------------------------- kidney sanity

def test_kidney_labels_are_three_exclusive_segments(kidney_cases):
    for image, labels in kidney_cases.values():
        assert [(s.name, s.label_value, s.layer) for s in labels.segments] == [
            ("artery", 1, 0), ("medulla", 2, 0), ("cortex", 3, 0)]
        assert labels.layers.shape == (1,) + image.shape  # one layer: one label per voxel
        assert set(np.unique(labels.layers)) == {0, 1, 2, 3}
        assert labels.geometry == image.geometry and image.geometry.ndim == 3


def test_kidney_geometry_is_a_clinical_ct_grid():
    image, _ = make_kidney_full_phantom(7, matrix=32, slices=None)  # drawn slice count
    sx, sy, sz = image.geometry.spacing
    fov = sx * 32
    assert sx == sy and 0.6 * 512 <= fov <= 0.9 * 512
    assert 40 <= image.shape[0] <= 80 and 2.5 <= sz <= 5.0
    assert image.array.dtype == np.int16


def test_both_kidneys_with_medulla_inside_cortex(kidney_cases):
    for image, labels in kidney_cases.values():
        layer = labels.layers[0]
        medulla, cortex = layer == 2, layer == 3
        kidney = medulla | cortex
        components, sizes = _components(kidney)
        assert len(sizes) >= 2 and sizes[:2].sum() >= 0.97 * kidney.sum()
        spine_x = _spine_x_mm(image)
        sides = []
        for k in (1, 2):
            part = components == k
            sides.append(np.sign(_x_mm(image, np.nonzero(part)[2]).mean() - spine_x))
            assert (part & medulla).sum() > 0.08 * part.sum()  # pyramids in each kidney
        assert sorted(sides) == [-1, 1]  # one on each side of the spine
        # the pyramids are surrounded by parenchyma: their in-plane border lies almost only in cortex
        ring = _dilate(medulla, in_plane_only=True) & ~medulla
        assert (ring & kidney).sum() >= 0.85 * ring.sum()
        assert _components(medulla)[1].size >= 4  # several distinct pyramids


def test_renal_arteries_run_from_the_aorta_to_each_hilum(kidney_cases):
    for image, labels in kidney_cases.values():
        layer = labels.layers[0]
        artery, kidney = layer == 1, (layer == 2) | (layer == 3)
        components, _ = _components(kidney)
        spine_x = _spine_x_mm(image)
        for k in (1, 2):
            touching = _dilate(components == k) & artery
            assert touching.any(), "an artery reaches the hilum of each kidney"
            # the artery touching this kidney comes from near the midline (the aorta); one voxel of dilation
            # bridges the gaps a thin oblique tube leaves between thick slices
            arteries, _ = _components(_dilate(artery))
            ids = np.unique(arteries[touching])
            reach = np.abs(_x_mm(image, np.nonzero(np.isin(arteries, ids))[2]) - spine_x).min()
            assert reach < 30.0


def test_kidney_image_is_plausible_ct(kidney_cases):
    for image, labels in kidney_cases.values():
        array = image.array.astype(float)
        layer = labels.layers[0]
        assert -1024 <= array.min() and array.max() <= 3071
        corners = array[:, :6, :6]
        assert corners.mean() < -950 and 5 < corners.std() < 40  # air with CT noise
        body = array > -500
        fat = ((array > -150) & (array < -50)).sum() / body.sum()
        assert fat > 0.05  # subcutaneous, visceral and perirenal fat
        cortex, medulla = array[layer == 3].mean(), array[layer == 2].mean()
        assert 100 < cortex < 280 and cortex - medulla > 15  # enhanced cortex, darker pyramids
        assert 100 < array[layer == 1].mean()  # contrast in the arteries


def test_spine_is_bright_bone_near_the_midline_at_the_back(kidney_cases):
    for image, _ in kidney_cases.values():
        array = image.array
        nz, ny, nx = array.shape
        body = array > -500
        ys, xs = np.nonzero(body.any(axis=0))
        centre_y, centre_x = ys.mean(), xs.mean()
        half = int(25.0 / image.geometry.spacing[0])
        strip = array[:, int(centre_y):, int(centre_x) - half: int(centre_x) + half]
        per_slice = (strip > 300).sum(axis=(1, 2))
        assert (per_slice > 0).mean() >= 0.9
        assert array.max() > 500


# ----------------------------------------------------------------------------------- fundus sanity

def test_fundus_disc_contains_cup_with_a_plausible_ratio(fundus_cases):
    ratios, sides = [], []
    for image, labels in fundus_cases.values():
        assert [(s.name, s.label_value, s.layer) for s in labels.segments] == [("disc", 1, 0), ("cup", 2, 1)]
        assert labels.layers.shape == (2, 1) + image.shape[1:] and labels.geometry.ndim == 2
        disc, cup = labels.mask("disc"), labels.mask("cup")
        assert cup.any() and not (cup & ~disc).any()
        ratios.append(cup.sum() / disc.sum())
        sides.append(np.nonzero(disc[0])[1].mean() > image.shape[2] / 2)
    assert all(0.02 <= r <= 0.7 for r in ratios)
    assert max(ratios) - min(ratios) > 0.1  # the cup-to-disc ratio varies
    assert set(sides) == {True, False}  # right and left eyes


def test_fundus_disc_is_brighter_than_its_surroundings(fundus_cases):
    for image, labels in fundus_cases.values():
        rgb = image.array[0].astype(float)
        luminance = rgb @ np.array([0.3, 0.59, 0.11])
        disc = labels.mask("disc")[0]
        ys, xs = np.nonzero(disc)
        radius = np.sqrt(disc.sum() / np.pi)
        yy, xx = np.mgrid[: disc.shape[0], : disc.shape[1]]
        distance = np.hypot(yy - ys.mean(), xx - xs.mean())
        ring = (distance > 1.6 * radius) & (distance < 2.6 * radius) & (luminance > 0)
        assert luminance[disc].mean() > 1.2 * luminance[ring].mean()


def test_fundus_field_of_view_is_black_outside(fundus_cases):
    for image, _ in fundus_cases.values():
        rgb = image.array[0]
        assert image.array.dtype == np.uint8 and rgb.shape[2] == 3
        assert not rgb[:3, :3].any() and not rgb[-3:, -3:].any()  # the corners lie outside the circle
        dark = (rgb.sum(axis=2) == 0).mean()
        assert 0.1 < dark < 0.6
        h, w = rgb.shape[:2]
        centre = rgb[h // 2 - 5: h // 2 + 5, w // 2 - 5: w // 2 + 5].astype(float)
        assert centre[..., 0].mean() > centre[..., 2].mean() + 20  # a red-orange fundus
        assert centre.sum(axis=-1).min() > 0


def test_fundus_drawn_size_varies():
    shapes = {make_fundus_full_phantom(seed)[0].shape for seed in (0, 5)}
    assert all(400 <= h <= 800 and h <= w for _, h, w in shapes) and len(shapes) == 2


# ----------------------------------------------------------------------------------- CLI

def test_cli_writes_both_unseen_kinds(tmp_path, capsys):
    kidney_dir, fundus_dir = tmp_path / "kidney", tmp_path / "fundus"
    assert main(["phantom", "kidney-full", "--out", str(kidney_dir), "--n", "1", "--seed", "4",
                 "--matrix", "48", "--slices", "10"]) == 0
    assert main(["phantom", "fundus-full", "--out", str(fundus_dir), "--n", "2", "--size", "96"]) == 0
    assert sorted(p.name for p in kidney_dir.iterdir()) == ["case_000_image.nii.gz", "case_000_labels.seg.nrrd"]
    image = read_image(kidney_dir / "case_000_image.nii.gz")
    labels = read_labels(kidney_dir / "case_000_labels.seg.nrrd")
    expected_image, expected_labels = make_kidney_full_phantom(4, matrix=48, slices=10)
    np.testing.assert_array_equal(image.array, expected_image.array)
    np.testing.assert_array_equal(labels.layers, expected_labels.layers)
    assert image.geometry.same_grid(expected_image.geometry) and labels.geometry.same_grid(image.geometry)
    assert [s.name for s in labels.segments] == ["artery", "medulla", "cortex"]

    assert sorted(p.name for p in fundus_dir.iterdir()) == [
        "case_000_image.png", "case_000_labels.seg.nrrd", "case_001_image.png", "case_001_labels.seg.nrrd"]
    photo = read_image(fundus_dir / "case_001_image.png")
    marks = read_labels(fundus_dir / "case_001_labels.seg.nrrd")
    expected_photo, expected_marks = make_fundus_full_phantom(1, size=96)
    np.testing.assert_array_equal(photo.array, expected_photo.array)
    assert photo.geometry.ndim == 2 and marks.layers.shape == (2, 1, 96, 96)
    assert not (marks.mask("cup") & ~marks.mask("disc")).any()
    np.testing.assert_array_equal(marks.layers, expected_marks.layers)
    assert "wrote 2 fundus-full case(s)" in capsys.readouterr().out


def test_cli_rejects_bad_unseen_options(tmp_path, capsys):
    assert main(["phantom", "kidney-full", "--out", str(tmp_path), "--matrix", "8"]) == 2
    assert "--matrix" in capsys.readouterr().err
    assert main(["phantom", "fundus-full", "--out", str(tmp_path), "--size", "10"]) == 2
    assert "--size" in capsys.readouterr().err
    assert not any(tmp_path.iterdir())


# ----------------------------------------------------------------------------------- isolation

FORBIDDEN = ("unseen_phantoms", "kidney-full", "kidney_full", "fundus-full", "fundus_full")


def test_training_and_tuning_never_import_the_unseen_family():
    code = "\n".join([
        "import importlib.util, sys",
        "import KnowledgeSAMLib.train.trainer, KnowledgeSAMLib.train.sources, KnowledgeSAMLib.train.pairs",
        "import KnowledgeSAMLib.data.phantoms",
        "spec = importlib.util.spec_from_file_location('tune_engine', 'bench/tune_engine.py')",
        "module = importlib.util.module_from_spec(spec)",
        "spec.loader.exec_module(module)",
        "assert hasattr(module, 'main') and 'KnowledgeSAMLib.train.trainer' in sys.modules",
        "print(sorted(m for m in sys.modules if 'unseen' in m))",
    ])
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"


def test_no_training_or_tuning_file_names_the_unseen_family():
    files = [p for p in (REPO / "KnowledgeSAMLib" / "train").rglob("*")
             if p.is_file() and p.suffix in (".py", ".yaml", ".json")]
    files += [p for p in (REPO / "configs").rglob("*") if p.is_file()]
    files += [REPO / "bench" / "tune_engine.py", REPO / "KnowledgeSAMLib" / "data" / "phantoms" / "__init__.py"]
    assert len(files) > 10
    offenders = [f"{p.relative_to(REPO)}: {word}" for p in files for word in FORBIDDEN
                 if word in p.read_text(encoding="utf-8", errors="replace")]
    assert not offenders, offenders


def test_the_unseen_benchmark_writes_its_docs_page(tmp_path):
    """``bench/unseen.py --markdown`` writes the page ``docs/unseen.md`` is: the command that made it and a table
    per family with every pair (a tiny model and one small fundus pair keep this fast)."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "bench" / "unseen.py"
    spec = importlib.util.spec_from_file_location("bench_unseen_for_test", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    page = tmp_path / "unseen.md"
    assert module.main(["--model", "tiny", "--family", "fundus-full", "--n", "1", "--threads", "1",
                        "--markdown", str(page)]) == 0
    text = page.read_text(encoding="utf-8")
    assert f"--markdown {page}" in text and "do not edit by hand" in text
    assert "| pair | disc | cup | mean | s/case |" in text and "| 0<-100 |" in text and "| **all** |" in text
