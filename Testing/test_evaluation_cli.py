"""``knowledgesam evaluate`` end to end on files written with SimpleITK and the project's writers."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from PIL import Image as PILImage

from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.data.io import write_labels
from KnowledgeSAMLib.data.volume import Geometry, Labels, Segment

SHAPE = (8, 20, 20)
SPACING = (0.8, 0.8, 2.0)


def labelmap(shift: int = 0) -> np.ndarray:
    array = np.zeros(SHAPE, np.uint8)
    array[2:6, 3:9, 3 + shift:9 + shift] = 1
    array[2:6, 11:17, 11:17] = 2
    return array


def write_sitk(array: np.ndarray, path, spacing=SPACING, origin=(0.0, 0.0, 0.0)) -> str:
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    image.SetOrigin(origin)
    sitk.WriteImage(image, str(path))
    return str(path)


@pytest.fixture()
def files(tmp_path):
    truth = write_sitk(labelmap(), tmp_path / "truth.nii.gz")
    prediction = write_sitk(labelmap(shift=2), tmp_path / "pred.nrrd")
    rng = np.random.default_rng(0)
    image = write_sitk((rng.random(SHAPE) * 100 + labelmap() * 50).astype(np.float32), tmp_path / "image.nii.gz")
    return {"truth": truth, "prediction": prediction, "image": image, "dir": tmp_path}


def test_table_output(files, capsys):
    code = main(["evaluate", "--prediction", files["prediction"], "--truth", files["truth"]])
    out = capsys.readouterr().out
    assert code == 0
    rows = {line.split()[0] + line.split()[1]: line.split() for line in out.splitlines() if line.startswith("Label")}
    # Label 1: 4x6x6 boxes shifted by 2 voxels in x: overlap 4*6*4 -> Dice 2*96/288; HD95 = 2 * 0.8 mm.
    assert float(rows["Label1"][2]) == pytest.approx(2 * 96 / 288, abs=1e-4)
    assert float(rows["Label1"][3]) == pytest.approx(1.6, abs=0.01)
    assert float(rows["Label2"][2]) == 1.0
    assert "mean" in out and "matched by value" in out


def test_json_output_and_label_selection(files, capsys):
    code = main(["evaluate", "--prediction", files["prediction"], "--truth", files["truth"], "--labels", "2", "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    assert [s["truth_label"] for s in payload["structures"]] == [2]
    assert payload["mean"] == {"dice": 1.0, "hd95_mm": 0.0}
    assert payload["resampled_prediction"] is False


def test_seg_nrrd_matched_by_name(files, capsys):
    geometry = Geometry(spacing=SPACING)
    swapped = np.where(labelmap() == 1, 2, np.where(labelmap() == 2, 1, 0)).astype(np.uint8)
    truth = Labels(labelmap()[None], geometry, [Segment("head", 1), Segment("body", 2)])
    prediction = Labels(swapped[None], geometry, [Segment("body", 1), Segment("head", 2)])
    truth_path = write_labels(truth, files["dir"] / "truth.seg.nrrd")
    prediction_path = write_labels(prediction, files["dir"] / "pred.seg.nrrd")
    code = main(["evaluate", "--prediction", str(prediction_path), "--truth", str(truth_path), "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["matched_by"] == "name"
    assert [(s["name"], s["dice"]) for s in payload["structures"]] == [("head", 1.0), ("body", 1.0)]
    code = main(["evaluate", "--prediction", str(prediction_path), "--truth", str(truth_path),
                 "--segments", "body", "--json"])
    assert [s["name"] for s in json.loads(capsys.readouterr().out)["structures"]] == ["body"]


def test_prediction_on_another_grid_is_resampled(files, capsys):
    coarse = labelmap()[:, ::2, ::2]  # every other voxel on a grid twice as coarse: the same boxes, roughly
    path = write_sitk(coarse, files["dir"] / "coarse.nii.gz", spacing=(1.6, 1.6, 2.0), origin=(0.4, 0.4, 0.0))
    code = main(["evaluate", "--prediction", path, "--truth", files["truth"], "--json"])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0 and payload["resampled_prediction"] is True
    assert all(s["dice"] > 0.6 for s in payload["structures"])


def test_overlay_png_is_written_atomically_and_kept(files, capsys):
    out = files["dir"] / "check.png"
    args = ["evaluate", "--prediction", files["prediction"], "--truth", files["truth"], "--overlay", str(out)]
    assert main(args + ["--image", files["image"]]) == 0
    with PILImage.open(out) as picture:
        picture.load()
        assert picture.format == "PNG" and picture.mode == "RGB"
        pixels = np.asarray(picture)
    assert pixels.shape[0] > 100 and pixels.shape[1] > 100
    # Truth outlines (green) and prediction outlines (red) are both drawn.
    assert ((pixels == (0, 230, 0)).all(axis=-1)).any()
    assert ((pixels == (255, 40, 40)).all(axis=-1)).any()
    assert not [p for p in files["dir"].iterdir() if "partial" in p.name]
    before = out.read_bytes()
    capsys.readouterr()
    assert main(args) == 2  # exists, no --overwrite
    assert "file exists" in capsys.readouterr().err
    assert out.read_bytes() == before
    assert main(args + ["--overwrite"]) == 0  # without an image: black background
    assert out.read_bytes() != before


@pytest.mark.parametrize("extra, message", [
    (["--labels", "3"], "truth has no label value 3"),
    (["--segments", "head"], "no segment 'head'"),
    (["--overlay", "x.jpg"], "ending in .png"),
    (["--image", "i.nii.gz"], "--image is only used"),
])
def test_bad_requests_give_one_line_errors(files, capsys, extra, message):
    code = main(["evaluate", "--prediction", files["prediction"], "--truth", files["truth"]] + extra)
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert message in err and len(err.splitlines()) == 1 and err.startswith("knowledgesam: error:")


def test_missing_file_and_far_away_grid(files, capsys):
    assert main(["evaluate", "--prediction", str(files["dir"] / "nope.nii.gz"), "--truth", files["truth"]]) == 2
    assert "nope.nii.gz" in capsys.readouterr().err
    far = write_sitk(labelmap(), files["dir"] / "far.nii.gz", origin=(900.0, 0.0, 0.0))
    assert main(["evaluate", "--prediction", far, "--truth", files["truth"]]) == 2
    err = capsys.readouterr().err
    assert "far.nii.gz" in err and "overlap" in err


def test_image_on_another_grid_is_refused_for_the_overlay(files, capsys):
    other = write_sitk(np.zeros((3, 5, 5), np.float32), files["dir"] / "small.nii.gz")
    code = main(["evaluate", "--prediction", files["prediction"], "--truth", files["truth"],
                 "--overlay", str(files["dir"] / "o.png"), "--image", other])
    assert code == 2 and "differs from the truth grid" in capsys.readouterr().err
    assert not (files["dir"] / "o.png").exists()


def test_bad_label_list_is_rejected_by_the_parser(files, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--prediction", files["prediction"], "--truth", files["truth"], "--labels", "a,b"])
    assert exit_info.value.code == 2
    assert "comma-separated label values" in capsys.readouterr().err


def test_2d_png_labels(tmp_path, capsys):
    truth = np.zeros((30, 40), np.uint8)
    truth[5:20, 5:25] = 1
    prediction = np.roll(truth, 3, axis=1)
    PILImage.fromarray(truth).save(tmp_path / "t.png")
    PILImage.fromarray(prediction).save(tmp_path / "p.png")
    code = main(["evaluate", "--prediction", str(tmp_path / "p.png"), "--truth", str(tmp_path / "t.png"), "--json",
                 "--overlay", str(tmp_path / "o.png")])
    payload = json.loads(capsys.readouterr().out)
    assert code == 0
    (structure,) = payload["structures"]
    assert structure["dice"] == pytest.approx(2 * 15 * 17 / (2 * 300))
    assert structure["hd95_mm"] == pytest.approx(3.0)
    assert (tmp_path / "o.png").stat().st_size > 0
