"""The batch script's Slicer path (``Slicer --no-main-window --python-script KnowledgeSAMBatch.py``) on
slicer-core: files loaded into a scene by Slicer's storage nodes, the Logic and the real engine (the ``tiny``
configuration: random weights, so geometry and plumbing, not accuracy), ``.seg.nrrd`` files written and read
back with slicerio, a bad target reported while the others run, existing outputs refused before any work."""

from __future__ import annotations

import functools
import warnings
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer", reason="slicer-core is not installed (pip install slicer-core)")
slicerio = pytest.importorskip("slicerio")

from KnowledgeSAMLib import mrml  # noqa: E402
from KnowledgeSAMLib.data.io import write_image, write_labels  # noqa: E402
from KnowledgeSAMLib.data.phantoms import make_kidney_phantom  # noqa: E402
from KnowledgeSAMLib.errors import InputError  # noqa: E402

from slicer_stubs import load_module, stub_slicer_python_layer  # noqa: E402
from test_slicer_helpers import load_batch_script  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SHAPE = (8, 40, 40)


@pytest.fixture()
def files(tmp_path):
    paths = {}
    for seed, name in ((6, "atlas"), (3, "case3"), (4, "case4")):
        image, labels = make_kidney_phantom(seed, shape=SHAPE)
        paths[name] = (write_image(image, tmp_path / f"{name}.nrrd"), image)
        if name == "atlas":
            paths["atlas.seg"] = (write_labels(labels, tmp_path / "atlas.seg.nrrd"), labels)
    (tmp_path / "broken.nrrd").write_bytes(b"NRRD0004\nthis is not a volume\n")
    return tmp_path, paths


def run_batch(monkeypatch, argv):
    stub_slicer_python_layer(monkeypatch)
    module = load_module(monkeypatch, "KnowledgeSAM", ROOT / "KnowledgeSAM" / "KnowledgeSAM.py")
    scene = mrml.headless_scene()
    batch = load_batch_script()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "tiny" has random weights, and says so
        status = batch.main(argv, module.KnowledgeSAMLogic(), functools.partial(mrml.load_volume, scene),
                            functools.partial(mrml.load_segmentation, scene))
    return batch, scene, status


def test_files_in_a_scene_run_and_seg_nrrd_out(monkeypatch, capsys, files):
    folder, paths = files
    argv = ["--target", str(paths["case3"][0]), str(paths["case4"][0]), str(folder / "broken.nrrd"),
            "--reference", str(paths["atlas"][0]), "--reference-segmentation", str(paths["atlas.seg"][0]),
            "--segments", "cortex", "medulla", "--mode", "volume", "--device", "cpu", "--model", "tiny",
            "--output", str(folder / "out") + "/"]
    batch, scene, status = run_batch(monkeypatch, argv)
    err = capsys.readouterr().err
    # every header is read before anything is computed: one unreadable target refuses the batch, writes nothing
    assert status == batch.EXIT_BAD_INPUT and "broken.nrrd: cannot read as" in err
    assert not (folder / "out").exists() or not any((folder / "out").iterdir())

    argv.remove(str(folder / "broken.nrrd"))
    batch, scene, status = run_batch(monkeypatch, argv)
    assert status == 0, capsys.readouterr().err
    for name in ("case3", "case4"):
        data = slicerio.read_segmentation(str(folder / "out" / f"{name}.seg.nrrd"))
        assert sorted(slicerio.segment_names(data)) == ["cortex", "medulla"]
        image = paths[name][1]
        np.testing.assert_allclose(np.asarray(data["ijkToLPS"]), image.geometry.index_to_physical(), atol=1e-5)
        assert data["voxels"].shape[:3] == image.shape[::-1]  # the target's whole grid (IJK)
    assert not (folder / "out" / "broken.seg.nrrd").exists()
    kept = sorted((scene.GetNthNode(i).GetClassName(), scene.GetNthNode(i).GetName())
                  for i in range(scene.GetNumberOfNodes()) if scene.GetNthNode(i).IsA("vtkMRMLVolumeNode")
                  or scene.GetNthNode(i).IsA("vtkMRMLSegmentationNode"))
    assert kept == [("vtkMRMLScalarVolumeNode", "atlas"), ("vtkMRMLSegmentationNode", "atlas")], \
        "targets and outputs are removed again; the reference is kept"


def test_an_existing_output_is_refused_before_anything_is_loaded(monkeypatch, capsys, files):
    folder, paths = files
    existing = folder / "case3.seg.nrrd"
    existing.write_bytes(b"earlier work")
    argv = ["--target", str(paths["case3"][0]), "--reference", str(paths["atlas"][0]),
            "--reference-segmentation", str(paths["atlas.seg"][0]), "--output", str(existing)]
    batch, scene, status = run_batch(monkeypatch, argv)
    assert status == batch.EXIT_BAD_INPUT and "not overwriting" in capsys.readouterr().err
    assert existing.read_bytes() == b"earlier work"
    assert scene.GetNodesByClass("vtkMRMLVolumeNode").GetNumberOfItems() == 0, "nothing was loaded"


def test_the_loaders_name_the_file_they_cannot_read(tmp_path):
    scene = mrml.headless_scene()
    with pytest.raises(InputError, match="missing.nrrd: volume file not found"):
        mrml.load_volume(scene, tmp_path / "missing.nrrd")
    (tmp_path / "junk.seg.nrrd").write_bytes(b"junk")
    with pytest.raises(InputError, match="junk.seg.nrrd: could not read the segmentation"):
        mrml.load_segmentation(scene, tmp_path / "junk.seg.nrrd")
    assert scene.GetNodesByClass("vtkMRMLSegmentationNode").GetNumberOfItems() == 0
