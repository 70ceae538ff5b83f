"""``knowledgesam demo`` end to end: phantoms in, a .seg.nrrd, provenance, a montage and Dice out."""

from __future__ import annotations

import json

import numpy as np

from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.data.io import read_image, read_labels


def test_demo_runs_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--output", str(out), "--shape", "10,64,64", "--quiet", "--batch-size", "4"]) == 0
    printed = capsys.readouterr().out
    for name in ("artery", "medulla", "cortex", "mean"):
        line = next(line for line in printed.splitlines() if line.startswith(name))
        assert 0.0 <= float(line.split()[-1]) <= 1.0
    target = read_image(out / "target.nrrd")
    prediction = read_labels(out / "prediction.seg.nrrd")
    assert prediction.geometry.same_grid(target.geometry) and prediction.shape == target.shape == (10, 64, 64)
    assert [s.name for s in prediction.segments] == ["artery", "medulla", "cortex"]
    assert [s.label_value for s in prediction.segments] == [1, 2, 3]
    record = json.loads((out / "prediction.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    assert record["mode"] == "volume" and record["reference"].endswith("reference.nrrd")
    from PIL import Image

    with Image.open(out / "montage.png") as picture:
        assert picture.width > 4 * 64 and picture.height > 64
        assert np.asarray(picture.convert("RGB")).std() > 10  # not blank
    truth = read_labels(out / "target_truth.seg.nrrd")
    assert truth.mask("cortex").any()


def test_demo_refuses_to_overwrite_an_earlier_demo(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / "montage.png").write_text("mine", encoding="utf-8")
    assert main(["demo", "--output", str(out), "--shape", "6,32,32", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert "montage.png" in err and "exists" in err
    assert (out / "montage.png").read_text(encoding="utf-8") == "mine" and sorted(p.name for p in out.iterdir()) == ["montage.png"]


def test_demo_rejects_a_bad_shape(tmp_path, capsys):
    assert main(["demo", "--output", str(tmp_path / "d"), "--shape", "10,64"]) == 2
    assert "--shape" in capsys.readouterr().err
