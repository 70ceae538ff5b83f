"""Your own labelled cases as training sources: every folder layout round-trips on tiny generated folders,
splits are by patient and deterministic per seed, and bad data is named (one line each) instead of crashing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image as PILImage

from KnowledgeSAMLib.data.io import write_image, write_labels
from KnowledgeSAMLib.data.phantoms import make_fundus_phantom, make_kidney_phantom
from KnowledgeSAMLib.data.volume import Geometry, Image, Labels
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.train.config import SourceConfig
from KnowledgeSAMLib.train.folder_scan import scan_folder
from KnowledgeSAMLib.train.folder_split import default_split_sizes, split_patients
from KnowledgeSAMLib.train.sources import build_source

SHAPE = (12, 32, 32)
KIDNEY = ["artery", "medulla", "cortex"]


def kidney(seed: int) -> tuple[Image, Labels]:
    return make_kidney_phantom(seed, shape=SHAPE)


def build(root, kind="volume_folder", size=32, lines=None, strict=False, **fields):
    src = SourceConfig(kind=kind, root=str(root), **{"val_cases": 1, "test_cases": 1, **fields})
    return build_source(src, size, kind, warn=None if lines is None else lines.append, strict=strict)


def names(cases) -> list[str]:
    return sorted(c.name for c in cases)


# ------------------------------------------------------------------------------------------ layouts
def test_phantom_cli_folder_round_trip(tmp_path):
    """`knowledgesam phantom` writes case_XXX_image.nii.gz + case_XXX_labels.seg.nrrd: the generic layout."""
    from KnowledgeSAMLib.cli import main

    assert main(["phantom", "kidney", "--out", str(tmp_path), "--n", "5", "--shape", *map(str, SHAPE)]) == 0
    source = build(tmp_path)
    assert source.tasks == KIDNEY
    everything = names(source.train) + names(source.val) + source.held_out
    assert sorted(everything) == [f"case_{i:03d}" for i in range(5)]
    assert len(source.val) == 1 and len(source.held_out) == 1 and len(source.train) == 3
    case = source.train[0]
    assert case.is_volume and case.images.shape[1:] == (32, 32, 3) and case.masks.shape[1] == 3
    assert source.split["patients"]["test"] == source.held_out  # one case per patient here
    image, labels = kidney(int(case.name[-3:]))
    # the masks are the labels' (the slicing itself is volume_to_case's, tested elsewhere)
    assert case.present[:, 0].sum() == sum(labels.mask("artery")[z].any() for z in case.slice_index)


def test_nnunet_layout_with_a_dataset_json_label_table(tmp_path):
    (tmp_path / "imagesTr").mkdir()
    (tmp_path / "labelsTr").mkdir()
    for i in range(4):
        image, labels = kidney(i)
        write_image(image, tmp_path / "imagesTr" / f"kid_{i:03d}_0000.nii.gz")
        write_labels(labels, tmp_path / "labelsTr" / f"kid_{i:03d}.nii.gz")  # plain label map: values only
    (tmp_path / "dataset.json").write_text(json.dumps(
        {"labels": {"background": 0, "artery": 1, "medulla": 2, "cortex": 3}}), encoding="utf-8")
    source = build(tmp_path, tasks=["Cortex", "artery"])  # names match case-insensitively
    assert source.tasks == ["Cortex", "artery"]
    assert names(source.train + source.val) + source.held_out != []
    assert all(c.present[:, 0].any() for c in source.train)


def test_slicer_scene_per_case_folders(tmp_path):
    """Each case saved from Slicer in its own folder: CT.nrrd + Segmentation.seg.nrrd (names differ)."""
    for i in range(4):
        folder = tmp_path / f"patient{i}"
        folder.mkdir()
        image, labels = kidney(i)
        write_image(image, folder / "CT.nrrd")
        write_labels(labels, folder / "Segmentation.seg.nrrd")
    scan = scan_folder(tmp_path)
    assert [c.name for c in scan.cases] == [f"patient{i}" for i in range(4)] and not scan.problems
    assert [c.patient for c in scan.cases] == [f"patient{i}" for i in range(4)]
    source = build(tmp_path, val_cases=0)
    assert source.tasks == KIDNEY and len(source.train) == 3


def test_a_dicom_folder_is_one_image(tmp_path):
    series = tmp_path / "case1" / "dicom"
    series.mkdir(parents=True)
    for k in range(3):
        (series / f"IM{k}").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    _, labels = kidney(0)
    write_labels(labels, tmp_path / "case1" / "labels.seg.nrrd")
    scan = scan_folder(tmp_path)
    assert len(scan.cases) == 1 and scan.cases[0].image == series and scan.cases[0].name == "case1"


def _fundus_folder(root: Path, n: int, per_structure: bool) -> None:
    (root / "images").mkdir(parents=True)
    for i in range(n):
        image, labels = make_fundus_phantom(i, 64)
        PILImage.fromarray(image.array[0]).save(root / "images" / f"g{i:04d}.jpg")
        disc, cup = labels.mask("disc")[0], labels.mask("cup")[0]
        if per_structure:
            for name, mask in (("disc", disc), ("cup", cup)):
                (root / "masks" / name).mkdir(parents=True, exist_ok=True)
                PILImage.fromarray((mask * 255).astype(np.uint8)).save(root / "masks" / name / f"g{i:04d}.png")
        else:  # REFUGE: 0 = cup, 128 = the rest of the disc, 255 = background
            (root / "masks").mkdir(exist_ok=True)
            refuge = np.where(cup, 0, np.where(disc, 128, 255)).astype(np.uint8)
            PILImage.fromarray(refuge).save(root / "masks" / f"g{i:04d}.bmp")


def test_image_folder_with_one_mask_per_structure(tmp_path):
    _fundus_folder(tmp_path, 4, per_structure=True)
    source = build(tmp_path, kind="image_folder", size=64, val_cases=0)
    assert sorted(source.tasks) == ["cup", "disc"]
    case = source.train[0]
    assert not case.is_volume and case.n == 1
    disc, cup = case.masks[0, source.tasks.index("disc")], case.masks[0, source.tasks.index("cup")]
    assert cup.sum() > 0 and disc.sum() > cup.sum()


def test_refuge_style_label_images_with_a_label_table(tmp_path):
    _fundus_folder(tmp_path, 4, per_structure=False)
    (tmp_path / "labels.yaml").write_text("background: 255\ndisc: [0, 128]\ncup: 0\n", encoding="utf-8")
    lines: list[str] = []
    source = build(tmp_path, kind="image_folder", size=64, val_cases=0, lines=lines)
    assert source.tasks == ["disc", "cup"] and not lines
    for case in source.train:
        disc, cup = case.masks[0, 0].astype(bool), case.masks[0, 1].astype(bool)
        assert cup.any() and (cup & ~disc).sum() == 0 and disc.sum() > cup.sum()  # the disc holds the cup
    _, labels = make_fundus_phantom(int(source.train[0].name[1:]), 64)
    assert source.train[0].masks[0, 1].sum() == pytest.approx(labels.mask("cup").sum(), rel=0.02)


def test_fundus_phantoms_with_seg_nrrd_labels(tmp_path):
    from KnowledgeSAMLib.cli import main

    assert main(["phantom", "fundus", "--out", str(tmp_path), "--n", "4", "--size", "64"]) == 0
    source = build(tmp_path, kind="image_folder", size=64, val_cases=0)
    assert source.tasks == ["disc", "cup"] and len(source.train) == 3


# ------------------------------------------------------------------------------------------ splits
def test_splits_are_by_patient_deterministic_per_seed_and_stable(tmp_path):
    patients = [f"p{i:02d}" for i in range(12)]
    first = split_patients(patients, 2, 3, seed=7)
    assert first == split_patients(list(reversed(patients)), 2, 3, seed=7)  # file order does not matter
    assert first != split_patients(patients, 2, 3, seed=8)
    assert sorted(first.train + first.val + first.test) == patients
    bigger = split_patients(patients + ["p99"], 2, 3, seed=7)
    moved = [p for p in patients if first.of(p) != bigger.of(p)]
    assert len(moved) <= 1  # a new patient displaces at most the one whose place it takes
    with pytest.raises(InputError, match="leave one to train on"):
        split_patients(patients[:3], 1, 2, seed=0)
    assert default_split_sizes(20) == (2, 4) and default_split_sizes(3) == (1, 0)


def test_two_scans_of_a_patient_always_share_a_split(tmp_path):
    for p in range(6):
        for visit in ("a", "b"):
            image, labels = kidney(10 * p + (visit == "b"))
            write_image(image, tmp_path / f"p{p:02d}_{visit}_image.nii.gz")
            write_labels(labels, tmp_path / f"p{p:02d}_{visit}_labels.seg.nrrd")
    for seed in range(4):
        source = build(tmp_path, val_cases=1, test_cases=2, seed=seed, patients=r"^(p\d+)_")
        where = {}
        for split, cases in (("train", names(source.train)), ("val", names(source.val)), ("test", source.held_out)):
            for name in cases:
                where.setdefault(name[:3], set()).add(split)
        assert all(len(s) == 1 for s in where.values()) and len(where) == 6
        assert len(source.held_out) == 4 and len(source.val) == 2


def test_a_split_file_is_reused(tmp_path):
    (tmp_path / "data").mkdir()
    for i in range(6):
        image, labels = kidney(i)
        write_image(image, tmp_path / "data" / f"c{i}_image.nii.gz")
        write_labels(labels, tmp_path / "data" / f"c{i}_labels.seg.nrrd")
    first = build(tmp_path / "data", seed=3)
    (tmp_path / "split.json").write_text(json.dumps({"volume_folder": first.split}), encoding="utf-8")
    again = build(tmp_path / "data", seed=99, split_file=str(tmp_path / "split.json"))
    assert again.held_out == first.held_out and names(again.val) == names(first.val)
    views = {"volume_folder#1": first.split, "volume_folder#2": first.split}  # two views of one folder
    (tmp_path / "views.json").write_text(json.dumps(views), encoding="utf-8")
    assert build(tmp_path / "data", split_file=str(tmp_path / "views.json")).held_out == first.held_out
    (tmp_path / "plain.json").write_text(json.dumps({"train": ["c0", "c1"], "test": ["c5"]}), encoding="utf-8")
    lines: list[str] = []
    plain = build(tmp_path / "data", split_file=str(tmp_path / "plain.json"), lines=lines)
    assert names(plain.train) == ["c0", "c1"] and plain.held_out == ["c5"] and not plain.val
    assert any("not in the split file" in line for line in lines)


# ------------------------------------------------------------------------------------------ bad data
def _bad_folder(root: Path) -> None:
    root.mkdir()
    for i in range(5):
        image, labels = kidney(i)
        write_image(image, root / f"good{i}_image.nii.gz")
        write_labels(labels, root / f"good{i}_labels.seg.nrrd")
    image, labels = kidney(7)
    write_image(image, root / "alone_image.nii.gz")  # unpaired image
    write_labels(labels, root / "orphan_labels.seg.nrrd")  # unpaired labels
    write_image(image, root / "far_image.nii.gz")  # labels outside the image
    moved = Geometry(labels.geometry.spacing, tuple(np.add(labels.geometry.origin, (5000.0, 0, 0))),
                     labels.geometry.direction)
    write_labels(Labels(labels.layers, moved, labels.segments), root / "far_labels.seg.nrrd")
    write_image(image, root / "empty_image.nii.gz")  # empty masks
    write_labels(Labels(np.zeros_like(labels.layers), labels.geometry, labels.segments), root / "empty_labels.seg.nrrd")
    flat, flat_labels = make_fundus_phantom(0, 64)  # a 2D case among volumes
    write_image(flat, root / "flat_image.png")
    write_labels(flat_labels, root / "flat_labels.seg.nrrd")
    (root / "broken_image.nii.gz").write_bytes(b"not a nifti at all")  # unreadable
    write_labels(labels, root / "broken_labels.seg.nrrd")
    no_artery = Labels(np.where(labels.layers == 1, 0, labels.layers), labels.geometry, labels.segments[1:])
    write_image(image, root / "noartery_image.nii.gz")  # a structure missing
    write_labels(no_artery, root / "noartery_labels.seg.nrrd")
    (root / "notes.txt").write_text("ignored", encoding="utf-8")


def test_bad_data_is_named_one_line_each_and_the_run_goes_on(tmp_path):
    _bad_folder(tmp_path / "bad")
    lines: list[str] = []
    source = build(tmp_path / "bad", val_cases=0, test_cases=0, lines=lines)
    text = "\n".join(lines)
    assert "alone_image.nii.gz: no label file pairs with this image" in text
    assert "orphan_labels.seg.nrrd: no image pairs with this label file" in text
    assert "far: the labels lie outside the image" in text
    assert "empty: empty labels" in text
    assert "flat: mixed dimensions" in text
    assert "broken_image.nii.gz" in text and "cannot read" in text
    assert "structure 'artery': missing in 1 of 6 cases" in text
    assert all("\n" not in line for line in lines) and len(lines) == 7
    assert names(source.train) == ["good0", "good1", "good2", "good3", "good4", "noartery"]
    assert source.problems == lines
    assert source.tasks == KIDNEY


def test_strict_stops_at_the_first_problem(tmp_path):
    _bad_folder(tmp_path / "bad")
    with pytest.raises(InputError, match="stopping: data.strict"):
        build(tmp_path / "bad", val_cases=0, test_cases=0, strict=True)


def test_a_structure_in_no_case_and_an_empty_folder_are_errors(tmp_path):
    for i in range(3):
        image, labels = kidney(i)
        write_image(image, tmp_path / f"c{i}_image.nii.gz")
        write_labels(labels, tmp_path / f"c{i}_labels.seg.nrrd")
    with pytest.raises(InputError, match="none of the 3 training and validation cases could be used; the first: c0: the labels hold none of liver"):
        build(tmp_path, val_cases=0, test_cases=0, tasks=["liver"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="found no image with a label file"):
        build(tmp_path / "empty")


def test_the_slice_cache_notices_a_changed_folder(tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    for i in range(4):
        image, labels = kidney(i)
        write_image(image, root / f"c{i}_image.nii.gz")
        write_labels(labels, root / f"c{i}_labels.seg.nrrd")
    src = SourceConfig(kind="volume_folder", root=str(root), val_cases=0)
    build_source(src, 32, "v", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1
    build_source(src, 32, "v", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 1  # found again
    image, labels = kidney(9)
    write_image(image, root / "c9_image.nii.gz")
    write_labels(labels, root / "c9_labels.seg.nrrd")
    again = build_source(src, 32, "v", cache_dir=tmp_path / "cache")
    assert len(list((tmp_path / "cache").glob("*.npz"))) == 2 and "c9" in names(again.train)


def test_settings_for_folders_leave_the_built_in_cache_keys_as_they_were():
    from KnowledgeSAMLib.train.config import load_config
    from KnowledgeSAMLib.train.sources import _cache_key

    cfg = load_config(Path(__file__).resolve().parents[1] / "configs" / "tiny_smoke.yaml")
    assert [_cache_key(s, 128) for s in cfg.data.sources] == ["442d4d766a79b704", "531e330941289ff9"]


def test_views_and_copies_work_on_folders(tmp_path):
    for i in range(3):
        image, labels = kidney(i)
        write_image(image, tmp_path / f"c{i}_image.nii.gz")
        write_labels(labels, tmp_path / f"c{i}_labels.seg.nrrd")
    source = build(tmp_path, val_cases=0, test_cases=0, view="roi", copies=2, max_slices=4, randomise=0.5)
    assert len(source.train) == 6 and all(c.n <= 4 for c in source.train)
    assert {c.name for c in source.train} == {f"c{i}#{k}" for i in range(3) for k in range(2)}
