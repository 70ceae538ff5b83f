"""``knowledgesam segment`` end to end: outputs, label values, many targets, torchrun sharding, and every
bad input (non-zero exit, one line naming the file and the problem, no output file)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.cli import segment as cli_segment
from KnowledgeSAMLib.data.io import read_labels, write_image, write_labels
from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment

from test_infer_fakes import ThresholdModel, blob_volume, dice


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    image, labels = blob_volume(shape=(12, 40, 48))
    other, other_labels = blob_volume(shape=(14, 40, 48), seed=1, shift=(1, 2, -1))
    write_image(image, root / "ct.nrrd")
    write_labels(labels, root / "ct.seg.nrrd")
    write_image(other, root / "atlas.nrrd")
    write_labels(other_labels, root / "atlas.seg.nrrd")
    plain = labels.layers[0].copy()
    plain[0, :3, :3] = 2  # a third label value that --labels 1,3 must leave out
    write_labels(Labels.from_labelmap(plain, labels.geometry), root / "ct_labels.nii.gz")
    declared = Labels(labels.layers, labels.geometry, labels.segments + [Segment("ghost", 9, 0)])
    write_labels(declared, root / "ghost.seg.nrrd")
    far = Geometry(labels.geometry.spacing, (9000.0, 0.0, 0.0), labels.geometry.direction)
    write_labels(Labels(labels.layers, far, labels.segments), root / "far.seg.nrrd")
    nan = Image(image.array.astype(np.float32), image.geometry)
    nan.array[2, 3, 4] = np.nan
    write_image(nan, root / "nan.nrrd")
    (root / "corrupt.nrrd").write_bytes(b"NRRD0004\nthis is not a header\n\x00\x01\x02")
    import SimpleITK as sitk

    sitk.WriteImage(sitk.GetImageFromArray(np.zeros((2, 4, 5, 6), np.int16), isVector=False),
                    str(root / "series4d.nii.gz"))
    write_image(Image(np.zeros((1, 40, 48), np.uint8), Geometry(ndim=2)), root / "photo.png")
    targets = root / "targets"
    targets.mkdir()
    for seed in (3, 4):
        write_image(blob_volume(shape=(10, 40, 48), seed=seed)[0], targets / f"patient{seed}.nrrd")
    return {"root": root, "image": image, "labels": labels, "targets": targets}


@pytest.fixture()
def fake(monkeypatch):
    """The model registry (which the CLI's Segmenter asks) returns the thresholding test double
    (see test_infer_fakes.py)."""
    from KnowledgeSAMLib.model import registry

    model = ThresholdModel(image_size=64)
    monkeypatch.setattr(registry, "resolve_model", lambda name, sam_checkpoint=None, sam_sha256=None: model)
    return model


def _run(*argv) -> int:
    return main(["segment", "--quiet", *map(str, argv)])


def test_same_volume_from_one_labelled_slice(files, fake, tmp_path, capsys):
    r = files["root"]
    out = tmp_path / "kidney.seg.nrrd"
    assert _run("--target", r / "ct.nrrd", "--reference-labels", r / "ct.seg.nrrd", "--slice", 6, "--output", out) == 0
    labels = read_labels(out)
    assert labels.geometry.same_grid(files["image"].geometry) and labels.shape == files["image"].shape
    assert dice(labels.mask("bright"), files["labels"].mask("bright")) > 0.95
    record = json.loads((tmp_path / "kidney.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    assert record["mode"] == "anchor" and record["target"].endswith("ct.nrrd") and record["reference_slices"]["bright"] == [6]
    assert "kidney.seg.nrrd" in capsys.readouterr().out


def test_labels_1_3_of_a_plain_labelmap_keep_their_values(files, fake, tmp_path):
    r = files["root"]
    out = tmp_path / "out.seg.nrrd"
    assert _run("--target", r / "ct.nrrd", "--reference-labels", r / "ct_labels.nii.gz", "--labels", "1,3",
                "--slice", 6, "--output", out) == 0
    labels = read_labels(out)
    assert sorted(s.label_value for s in labels.segments) == [1, 3]
    assert set(np.unique(labels.layers)) <= {0, 1, 3}


def test_segments_by_name_keep_name_and_colour(files, fake, tmp_path):
    r = files["root"]
    out = tmp_path / "dim.nii.gz"
    assert _run("--target", r / "ct.nrrd", "--reference", r / "atlas.nrrd", "--reference-labels",
                r / "atlas.seg.nrrd", "--segments", "dim", "--output", out) == 0
    labels = read_labels(out)
    assert [s.label_value for s in labels.segments] == [3]
    assert dice(labels.mask(3), files["labels"].mask("dim")) > 0.85
    record = json.loads((tmp_path / "dim.nii.gz.ksam.json").read_text(encoding="utf-8"))
    assert record["mode"] == "volume" and record["segments"] == [{"name": "dim", "label_value": 3, "layer": 0}]


def test_real_tiny_model_from_a_saved_folder(files, tmp_path):
    from KnowledgeSAMLib.model.build import build_model
    from KnowledgeSAMLib.model.weights import save_model

    save_model(build_model("tiny"), tmp_path / "model")
    r = files["root"]
    out = tmp_path / "tiny.seg.nrrd"
    assert _run("--target", r / "ct.nrrd", "--reference", r / "atlas.nrrd", "--reference-labels",
                r / "atlas.seg.nrrd", "--model", tmp_path / "model", "--mode", "volume", "--batch-size", 4,
                "--output", out) == 0
    labels = read_labels(out)
    assert labels.geometry.same_grid(files["image"].geometry)
    record = json.loads((tmp_path / "tiny.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    assert record["model"]["name"] == "tiny" and record["model"]["source"].endswith("model")


def test_many_targets_reuse_the_reference_and_torchrun_shards_them(files, fake, tmp_path, monkeypatch):
    r = files["root"]
    out = tmp_path / "results"
    args = ["--target", files["targets"], "--reference", r / "atlas.nrrd", "--reference-labels",
            r / "atlas.seg.nrrd", "--output", out]
    assert _run(*args) == 0
    first = json.loads((out / "patient3.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    second = json.loads((out / "patient4.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    assert first["counts"]["reference_slices_encoded"] > 0
    assert second["counts"]["reference_slices_encoded"] == 0  # cached from the first target
    assert read_labels(out / "patient4.seg.nrrd").shape == (10, 40, 48)

    sharded = tmp_path / "sharded"
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert _run(*args[:-1], sharded) == 0
    assert sorted(p.name for p in sharded.iterdir()) == ["patient4.seg.nrrd", "patient4.seg.nrrd.ksam.json"]


def test_a_list_file_of_targets(files, fake, tmp_path):
    listing = tmp_path / "targets.txt"
    listing.write_text(f"{files['targets'] / 'patient3.nrrd'}\n# comment\n\n", encoding="utf-8")
    r = files["root"]
    assert _run("--target", listing, "--reference", r / "atlas.nrrd", "--reference-labels", r / "atlas.seg.nrrd",
                "--output", tmp_path / "o", "--format", "nii.gz") == 0
    assert (tmp_path / "o" / "patient3.nii.gz").exists()


BAD = {
    "missing target": (["--target", "{root}/nope.nrrd"], "nope.nrrd", "not found"),
    "corrupt target": (["--target", "{root}/corrupt.nrrd"], "corrupt.nrrd", "cannot read"),
    "unknown label": (["--target", "{root}/ct.nrrd", "--labels", "7"], "ct.seg.nrrd", "label value 7"),
    "unknown segment": (["--target", "{root}/ct.nrrd", "--segments", "liver"], "ct.seg.nrrd", "'liver'"),
    "empty reference mask": (["--target", "{root}/ct.nrrd", "--reference-labels", "{root}/ghost.seg.nrrd",
                              "--segments", "ghost"], "ghost.seg.nrrd", "empty"),
    "empty on the chosen slice": (["--target", "{root}/ct.nrrd", "--slice", "0"], "ct.seg.nrrd", "empty"),
    "labels elsewhere in space": (["--target", "{root}/ct.nrrd", "--reference-labels", "{root}/far.seg.nrrd"],
                                  "far.seg.nrrd", "overlap"),
    "4D image": (["--target", "{root}/series4d.nii.gz"], "series4d.nii.gz", "4D"),
    "2D target, 3D reference": (["--target", "{root}/photo.png", "--reference", "{root}/ct.nrrd"], "photo.png", "2D"),
    "NaN intensities": (["--target", "{root}/nan.nrrd"], "nan.nrrd", "NaN"),
    "missing reference labels": (["--target", "{root}/ct.nrrd", "--reference-labels", "{root}/none.seg.nrrd"],
                                 "none.seg.nrrd", "not found"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_exits_nonzero_with_one_line_and_no_output(case, files, fake, tmp_path, capsys):
    argv, name, problem = BAD[case]
    root = str(files["root"])
    argv = [a.format(root=root) for a in argv]
    if "--reference-labels" not in argv:
        argv += ["--reference-labels", f"{root}/ct.seg.nrrd"]
    out = tmp_path / "out"
    out.mkdir()
    code = _run(*argv, "--output", out / "result.seg.nrrd")
    err = capsys.readouterr().err.strip()
    assert code != 0
    assert err.startswith("knowledgesam: error: ") and "\n" not in err, err
    assert name in err and problem in err, err
    assert list(out.iterdir()) == []
    assert fake.encoded_images == 0  # nothing was computed


def test_existing_output_is_refused_then_overwritten_on_request(files, fake, tmp_path, capsys):
    r = files["root"]
    out = tmp_path / "r.seg.nrrd"
    out.write_text("precious", encoding="utf-8")
    argv = ["--target", r / "ct.nrrd", "--reference-labels", r / "ct.seg.nrrd", "--slice", 6, "--output", out]
    assert _run(*argv) == 2
    err = capsys.readouterr().err
    assert "r.seg.nrrd" in err and "exists" in err and out.read_text(encoding="utf-8") == "precious"
    assert fake.encoded_images == 0
    assert _run(*argv, "--overwrite") == 0
    assert read_labels(out).segments


def test_ctrl_c_mid_run_leaves_no_file(files, fake, tmp_path, capsys):
    original = fake.decode
    calls = []

    def interrupted(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(*args)

    fake.decode = interrupted
    r = files["root"]
    out = tmp_path / "out"
    out.mkdir()
    code = _run("--target", r / "ct.nrrd", "--reference-labels", r / "ct.seg.nrrd", "--slice", 6,
                "--output", out / "x.seg.nrrd")
    assert code == 130 and "interrupted" in capsys.readouterr().err
    assert list(out.iterdir()) == []


def test_several_targets_need_an_output_folder(files, fake, tmp_path, capsys):
    r = files["root"]
    code = _run("--target", r / "ct.nrrd", r / "atlas.nrrd", "--reference-labels", r / "ct.seg.nrrd",
                "--output", tmp_path / "one.seg.nrrd")
    assert code == 2 and "folder" in capsys.readouterr().err


def test_2d_fundus_pair(fake, tmp_path):
    from KnowledgeSAMLib.data.phantoms import make_fundus_phantom

    for seed, name in ((1, "target"), (2, "reference")):
        image, labels = make_fundus_phantom(seed, 64)
        write_image(image, tmp_path / f"{name}.png")
        write_labels(labels, tmp_path / f"{name}.seg.nrrd")
    out = tmp_path / "pred.seg.nrrd"
    assert _run("--target", tmp_path / "target.png", "--reference", tmp_path / "reference.png",
                "--reference-labels", tmp_path / "reference.seg.nrrd", "--output", out) == 0
    labels = read_labels(out)
    assert labels.geometry.ndim == 2 and labels.shape == (1, 64, 64)
    assert [s.name for s in labels.segments] == ["disc", "cup"]
    assert json.loads((tmp_path / "pred.seg.nrrd.ksam.json").read_text(encoding="utf-8"))["mode"] == "volume"


def test_overlap_contested_and_flip_tta_reach_the_engine():
    from KnowledgeSAMLib.cli import build_parser
    from KnowledgeSAMLib.infer import EngineOptions

    def options(*extra):
        args = build_parser().parse_args(["segment", "--target", "t.nrrd", "--reference-labels", "l.seg.nrrd",
                                          "--output", "o.seg.nrrd", *extra])
        return cli_segment._options(args)

    assert (options().overlap, options().contested) == (EngineOptions().overlap, EngineOptions().contested)
    chosen = options("--overlap", "layers", "--contested", "smaller", "--top-k", "2")
    assert (chosen.overlap, chosen.contested, chosen.top_k) == ("layers", "smaller", 2)
    assert options("--contested", "probability").contested == "probability"
    assert options("--flip-tta").flip_tta is True and options("--no-flip-tta").flip_tta is False
    assert options().flip_tta is EngineOptions().flip_tta  # no flag: the engine's default
    with pytest.raises(SystemExit):
        options("--contested", "bigger")


def test_roi_box_limits_the_result_and_is_recorded(files, fake, tmp_path):
    r = files["root"]
    out = tmp_path / "boxed.seg.nrrd"
    assert _run("--target", r / "ct.nrrd", "--reference", r / "atlas.nrrd", "--reference-labels", r / "atlas.seg.nrrd",
                "--roi", "0,0,2,23,39,9", "--output", out) == 0
    labels = read_labels(out)
    assert labels.geometry.same_grid(files["image"].geometry) and labels.shape == files["image"].shape
    assert labels.layers[0][:, :, 24:].max() == 0 and labels.layers[0][:2].max() == 0  # nothing outside the box
    assert labels.layers[0][2:10, :, :24].max() > 0
    record = json.loads((tmp_path / "boxed.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    assert record["roi"]["mode"] == "box" and record["roi"]["box"] == "0,0,2,23,39,9"


@pytest.mark.parametrize("roi, message", [("1,2,3", "--roi must be"), ("900,900,50,950,950,60", "does not overlap")])
def test_bad_roi_is_one_line_and_writes_nothing(files, fake, tmp_path, capsys, roi, message):
    r = files["root"]
    out = tmp_path / "never.seg.nrrd"
    assert _run("--target", r / "ct.nrrd", "--reference", r / "atlas.nrrd", "--reference-labels",
                r / "atlas.seg.nrrd", "--roi", roi, "--output", out) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0] and not out.exists()


def test_absent_slices_and_slab_update_from_the_command_line(files, fake, tmp_path, capsys):
    r = files["root"]
    first = tmp_path / "first.seg.nrrd"
    assert _run("--target", r / "ct.nrrd", "--reference-labels", r / "ct.seg.nrrd", "--mode", "propagate",
                "--keep-slices", "4,8", "--absent-slices", "bright=10", "--output", first) == 0
    labels = read_labels(first)
    assert not labels.mask("bright")[10:].any() and labels.mask("bright")[4:9].any()
    updated = tmp_path / "updated.seg.nrrd"
    assert _run("--target", r / "ct.nrrd", "--reference-labels", first, "--mode", "propagate",
                "--keep-slices", "4,8", "--update", 8, "--output", updated) == 0
    record = json.loads((tmp_path / "updated.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    assert record["update"] == {"corrected_slice": 8, "slab": [5, 12]}
    # where to look next, outside the slab from the earlier result's sidecar (the update computed slices 5-11)
    before = json.loads((tmp_path / "first.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    outside = [k for k in range(len(before["confidence"]["bright"])) if not 5 <= k < 12]
    assert [record["confidence"]["bright"][k] for k in outside] == [before["confidence"]["bright"][k] for k in outside]
    assert any(before["confidence"]["bright"][k] is not None for k in outside if k not in (4, 10))
    for rec in (before, record):
        look = rec["next_slice_to_check"]
        assert look["segment"] == "bright" and look["slice"] not in (4, 8, 10)  # not yours, not absent
    printed = capsys.readouterr().out
    assert f"updated.seg.nrrd: next slice to check: {record['next_slice_to_check']['slice']} (bright" in printed
    again = read_labels(updated)
    np.testing.assert_array_equal(again.mask("bright")[:5], labels.mask("bright")[:5])
    assert _run("--target", r / "ct.nrrd", "--reference-labels", first, "--update", 8, "--output",
                tmp_path / "never.seg.nrrd") == 2
