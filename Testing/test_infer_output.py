"""Output: post-processing, layers for overlaps, the provenance sidecar, atomic writes, overwrite
refusal, and the geometry/metadata round trip through a Slicer .seg.nrrd."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from KnowledgeSAMLib.data import io as data_io
from KnowledgeSAMLib.data.io import read_labels
from KnowledgeSAMLib.data.volume import Geometry, Segment
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, segment
from KnowledgeSAMLib.infer.output import assemble_labels, postprocess, sidecar_path, write_result
from KnowledgeSAMLib.infer.slicing import axis_view

from test_infer_fakes import ThresholdModel, blob_volume

_A = 0.3
OBLIQUE = Geometry(spacing=(0.7, 0.8, 2.5), origin=(10.0, -20.0, 30.0),
                   direction=(np.array([[np.cos(_A), -np.sin(_A), 0], [np.sin(_A), np.cos(_A), 0], [0, 0, 1.0]])
                              @ np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]])).ravel())


@pytest.fixture(scope="module")
def result():
    image, labels = blob_volume(shape=(8, 24, 28), geometry=OBLIQUE, source="ct.nrrd")
    view = axis_view(image.shape, image.geometry, "axial")  # index y is the axial axis here
    both = np.flatnonzero(view.slice_has(labels.mask("bright")) & view.slice_has(labels.mask("dim")))
    labelled = int(both[len(both) // 2])
    return segment(SegmentRequest(image, image, labels, reference_slices=[labelled], batch_size=4), ThresholdModel(32))


def test_seg_nrrd_round_trip_keeps_geometry_names_colours_values(result, tmp_path):
    path = tmp_path / "out.seg.nrrd"
    written = write_result(result, path)
    assert written == [path, tmp_path / "out.seg.nrrd.ksam.json"]
    back = read_labels(path)
    assert back.shape == result.labels.shape
    assert back.geometry.same_grid(result.labels.geometry)
    assert [(s.name, s.label_value) for s in back.segments] == [("bright", 1), ("dim", 3)]
    assert np.allclose(back.find("bright").color, (1.0, 0.2, 0.2), atol=1e-3)
    np.testing.assert_array_equal(back.mask("bright"), result.labels.mask("bright"))


@pytest.mark.parametrize("name", ["out.nii.gz", "out.nrrd"])
def test_plain_labelmap_outputs(result, tmp_path, name):
    write_result(result, tmp_path / name)
    back = read_labels(tmp_path / name)
    assert back.geometry.same_grid(result.labels.geometry)
    assert sorted(s.label_value for s in back.segments) == [1, 3]


def test_sidecar_records_provenance(result, tmp_path):
    write_result(result, tmp_path / "p.seg.nrrd")
    record = json.loads((tmp_path / "p.seg.nrrd.ksam.json").read_text(encoding="utf-8"))
    assert record["mode"] == "anchor" and record["axis"] == "axial"
    assert len(record["model"]["sha256"]) == 64 and record["target"] == "ct.nrrd"
    assert len(record["confidence"]["bright"]) == 24 and record["slice_axis_index"] == 1
    assert len(record["reference_slices"]["bright"]) == 1
    assert "timings" in record and record["device"] == "cpu"


def test_existing_output_is_refused_and_untouched(result, tmp_path):
    path = tmp_path / "keep.seg.nrrd"
    path.write_text("precious", encoding="utf-8")
    with pytest.raises(InputError, match="exists"):
        write_result(result, path)
    assert path.read_text(encoding="utf-8") == "precious" and not sidecar_path(path).exists()
    sidecar_only = tmp_path / "b.seg.nrrd"
    sidecar_path(sidecar_only).write_text("{}", encoding="utf-8")
    with pytest.raises(InputError, match="b.seg.nrrd.ksam.json"):
        write_result(result, sidecar_only)
    assert not sidecar_only.exists()
    write_result(result, path, overwrite=True)
    assert read_labels(path).segments


def test_a_crash_while_writing_leaves_no_file(result, tmp_path, monkeypatch):
    def exploding_writer(labels):
        def write(temporary: Path) -> None:
            temporary.write_bytes(b"half a file")
            raise KeyboardInterrupt  # Ctrl-C in the middle of writing

        return write

    monkeypatch.setattr(data_io, "_seg_nrrd_writer", exploding_writer)
    with pytest.raises(KeyboardInterrupt):
        write_result(result, tmp_path / "x.seg.nrrd")
    assert list(tmp_path.iterdir()) == []


def test_a_failing_sidecar_removes_the_new_labels(result, tmp_path, monkeypatch):
    from KnowledgeSAMLib.infer import output

    monkeypatch.setattr(output, "provenance_json", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    with pytest.raises(InputError, match="could not be written .*disk full"):
        write_result(result, tmp_path / "y.seg.nrrd")
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------------- post-process

def _segments():
    return [Segment("a", 1, 0), Segment("b", 2, 0), Segment("c", 1, 1)]


def test_structures_sharing_a_reference_layer_are_exclusive():
    shape = (3, 8, 8)
    view = axis_view(shape, Geometry(), "axial")
    p = {"a": np.zeros(shape, np.uint8), "b": np.zeros(shape, np.uint8), "c": np.zeros(shape, np.uint8)}
    p["a"][:, :5] = 200
    p["b"][:, 3:] = 180  # rows 3-4 contested: "a" is more probable
    p["c"][:, 2:6] = 220  # another reference layer: may overlap
    masks = postprocess(p, _segments(), view, EngineOptions(contested="probability"))
    assert masks["a"][:, 3:5].all() and not masks["b"][:, 3:5].any()
    assert masks["c"][:, 2:6].all()
    labels = assemble_labels(masks, _segments(), Geometry(), shape)
    assert labels.layers.shape[0] == 2
    assert {s.name: s.layer for s in labels.segments} == {"a": 0, "b": 0, "c": 1}
    np.testing.assert_array_equal(labels.mask("c"), masks["c"])
    overlapping = postprocess(p, _segments(), view, EngineOptions(overlap="layers"))
    assert overlapping["b"][:, 3:5].all()
    assert assemble_labels(overlapping, _segments(), Geometry(), shape).layers.shape[0] == 3


def test_a_thin_structure_inside_a_larger_one_keeps_its_voxels_with_contested_smaller():
    """The larger structure's prediction covers the thin one with higher probability; with
    ``contested="smaller"`` the thin one wins, with ``"probability"`` (the default since stage 10) it loses."""
    shape = (3, 10, 10)
    view = axis_view(shape, Geometry(), "axial")
    segments = [Segment("artery", 1, 0), Segment("medulla", 2, 0)]
    p = {"artery": np.zeros(shape, np.uint8), "medulla": np.zeros(shape, np.uint8)}
    p["medulla"][:, 1:9, 1:9] = 250
    p["artery"][:, 4:6, :] = 160  # a tube through the medulla, less confident than it
    masks = postprocess(p, segments, view, EngineOptions(contested="smaller"))
    assert masks["artery"][:, 4:6, :].all()
    assert not (masks["artery"] & masks["medulla"]).any()  # still a partition
    assert masks["medulla"][:, 1:4, 1:9].all() and masks["medulla"][:, 6:9, 1:9].all()
    by_probability = postprocess(p, segments, view, EngineOptions())
    assert EngineOptions().contested == "probability"
    assert not by_probability["artery"][:, 4:6, 1:9].any() and by_probability["artery"][:, 4:6, 0].all()
    with pytest.raises(ValueError, match="contested"):
        EngineOptions(contested="bigger")


def test_largest_component_and_smoothing():
    shape = (5, 10, 10)
    view = axis_view(shape, Geometry(), "axial")
    prob = np.zeros(shape, np.uint8)
    prob[1:4, 1:5, 1:5] = 255
    prob[2, 8, 8] = 255  # a speck
    prob[0, 1:5, 1:5] = 100  # below threshold; smoothing with its neighbour lifts it
    segs = [Segment("s", 1)]
    plain = postprocess({"s": prob}, segs, view, EngineOptions(smooth_z=False, threshold=0.5))["s"]
    assert plain[2, 8, 8] and not plain[0].any()
    kept = postprocess({"s": prob}, segs, view, EngineOptions(smooth_z=False, largest_component=True))["s"]
    assert not kept[2, 8, 8] and kept[1:4, 1:5, 1:5].all()
    smooth = postprocess({"s": prob}, segs, view, EngineOptions(smooth_z=True, threshold=0.5))["s"]
    assert smooth[0, 2, 2] and not smooth[2, 8, 8]


def test_sidecar_name_keeps_the_whole_output_name():
    assert sidecar_path("a/b.seg.nrrd") == Path("a/b.seg.nrrd.ksam.json")
    assert sidecar_path("b.nii.gz") == Path("b.nii.gz.ksam.json")
    assert sidecar_path("b.nrrd") == Path("b.nrrd.ksam.json")
    assert len({sidecar_path(f"b.{ext}") for ext in ("seg.nrrd", "nii.gz", "nii", "nrrd", "mha")}) == 5
