"""``knowledgesam phantom``: writes readable cases, refuses to overwrite, reports bad arguments."""

from __future__ import annotations

import numpy as np

from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.data.io import read_image, read_labels


def test_kidney_cases_are_written_and_readable(tmp_path, capsys):
    out = tmp_path / "kidney"
    assert main(["phantom", "kidney", "--out", str(out), "--n", "2", "--seed", "7",
                 "--shape", "12", "40", "40"]) == 0
    assert sorted(p.name for p in out.iterdir()) == [
        "case_000_image.nii.gz", "case_000_labels.seg.nrrd", "case_001_image.nii.gz", "case_001_labels.seg.nrrd"]
    image = read_image(out / "case_001_image.nii.gz")
    labels = read_labels(out / "case_001_labels.seg.nrrd")
    assert image.array.shape == (12, 40, 40) and image.geometry.same_grid(labels.geometry)
    assert [s.name for s in labels.segments] == ["artery", "medulla", "cortex"]
    from KnowledgeSAMLib.data.phantoms import make_kidney_phantom

    expected_image, expected_labels = make_kidney_phantom(8, shape=(12, 40, 40))  # seed 7 + case 1
    np.testing.assert_array_equal(image.array, expected_image.array)
    np.testing.assert_array_equal(labels.layers, expected_labels.layers)
    assert "wrote 2 kidney case(s)" in capsys.readouterr().out


def test_fundus_cases_are_png_and_layered_segmentation(tmp_path):
    out = tmp_path / "fundus"
    assert main(["phantom", "fundus", "--out", str(out), "--n", "1", "--size", "64"]) == 0
    image = read_image(out / "case_000_image.png")
    labels = read_labels(out / "case_000_labels.seg.nrrd")
    assert image.array.shape == (1, 64, 64, 3) and image.geometry.ndim == 2
    assert labels.layers.shape == (2, 1, 64, 64) and labels.geometry.ndim == 2
    assert not (labels.mask("cup") & ~labels.mask("disc")).any()


def test_refuses_to_overwrite_before_writing_anything(tmp_path, capsys):
    out = tmp_path / "set"
    out.mkdir()
    (out / "case_001_labels.seg.nrrd").write_bytes(b"mine")
    assert main(["phantom", "fundus", "--out", str(out), "--n", "3", "--size", "48"]) == 2
    assert "case_001_labels.seg.nrrd: file exists" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["case_001_labels.seg.nrrd"]
    assert (out / "case_001_labels.seg.nrrd").read_bytes() == b"mine"
    assert main(["phantom", "fundus", "--out", str(out), "--n", "3", "--size", "48", "--overwrite"]) == 0
    assert read_labels(out / "case_001_labels.seg.nrrd").find("cup").layer == 1


def test_bad_arguments_are_clear_errors(tmp_path, capsys):
    assert main(["phantom", "kidney", "--out", str(tmp_path), "--n", "0"]) == 2
    assert "--n must be at least 1" in capsys.readouterr().err
    assert main(["phantom", "kidney", "--out", str(tmp_path), "--shape", "4", "8", "8"]) == 2
    assert "--shape" in capsys.readouterr().err


def test_kidney_roi_cases_are_written(tmp_path):
    from KnowledgeSAMLib.cli import main
    from KnowledgeSAMLib.data.io import read_image, read_labels

    assert main(["phantom", "kidney-roi", "--out", str(tmp_path), "--n", "1", "--seed", "5"]) == 0
    image = read_image(tmp_path / "case_000_image.nii.gz")
    labels = read_labels(tmp_path / "case_000_labels.seg.nrrd")
    assert image.shape == labels.shape == (40, 96, 96)
    assert {s.name for s in labels.segments} == {"artery", "medulla", "cortex"}


def test_kidney_organs_and_phase(tmp_path, capsys):
    out = tmp_path / "organs"
    assert main(["phantom", "kidney", "--out", str(out), "--shape", "12", "48", "48", "--organs",
                 "--phase", "portal"]) == 0
    labels = read_labels(out / "case_000_labels.seg.nrrd")
    assert [s.name for s in labels.segments] == ["kidney_right", "kidney_left", "liver", "spleen", "aorta",
                                                 "inferior_vena_cava", "vertebra", "bowel"]
    assert labels.mask("vertebra").any() and labels.mask("liver").any()
    assert main(["phantom", "kidney", "--out", str(tmp_path / "x"), "--phase", "portal"]) == 2
    assert "add --organs" in capsys.readouterr().err
    assert main(["phantom", "fundus", "--out", str(tmp_path / "y"), "--organs"]) == 2
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
