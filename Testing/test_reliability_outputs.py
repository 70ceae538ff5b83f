"""Every output is checked before any compute, and no input is ever written to.

Each case runs ``knowledgesam segment`` in-process with the thresholding test double (``test_infer_fakes``) and
checks: the exit status and one line on stderr, that nothing was computed when the run was refused
(``encoded_images == 0``), that the inputs are byte-identical, and what is on disk afterwards. The same rules
hold for Slicer's batch script, which plans through ``KnowledgeSAMLib.infer.paths`` (last section).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.data.locks import OutputLock
from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.infer.output import sidecar_path

from reliability_helpers import assert_pair_from_one_run, make_case, sha256
from test_infer_fakes import ThresholdModel


@pytest.fixture()
def fake(monkeypatch):
    from KnowledgeSAMLib.model import registry

    model = ThresholdModel(image_size=32)
    monkeypatch.setattr(registry, "resolve_model", lambda name, sam_checkpoint=None, sam_sha256=None: model)
    return model


@pytest.fixture()
def case(tmp_path):
    return make_case(tmp_path / "x", tmp_path / "unused-model")


def _segment(case, output, *extra) -> list[str]:
    """Volume mode, the issue's command: target, another reference and its labels."""
    return ["segment", "--quiet", "--target", str(case.target), "--reference", str(case.reference),
            "--reference-labels", str(case.reference_labels), "--labels", "1", "--output", str(output), *extra]


def _refused(capsys, argv, *fragments) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("knowledgesam: error: ") and "\n" not in err, err
    for fragment in fragments:
        assert fragment in err, err
    return err


# ---------------------------------------------------------------------------------- inputs stay inputs

@pytest.mark.parametrize("which", ["target", "reference", "reference_labels"])
def test_an_output_that_is_an_input_is_refused_even_with_overwrite(which, case, fake, capsys):
    before = case.fingerprints()
    _refused(capsys, _segment(case, getattr(case, which), "--overwrite"), str(getattr(case, which)), "is the input")
    assert case.fingerprints() == before and fake.encoded_images == 0


@pytest.mark.parametrize("link", ["hard", "symbolic"])
def test_an_input_reached_through_a_link_is_refused(link, case, fake, capsys):
    alias = case.root / "alias.nrrd"
    (os.link if link == "hard" else os.symlink)(case.target, alias)
    before = case.fingerprints()
    _refused(capsys, _segment(case, alias, "--overwrite"), "is the input")
    assert case.fingerprints() == before and fake.encoded_images == 0


def test_an_output_folder_that_is_the_target_folder_must_not_replace_a_target(case, fake, capsys, tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "a.nrrd").write_bytes(case.target.read_bytes())
    before = sha256(folder / "a.nrrd")
    _refused(capsys, ["segment", "--quiet", "--target", str(folder), "--reference-labels", str(case.target_labels),
                      "--output", str(folder), "--format", "nrrd", "--overwrite"], "a.nrrd", "is the input")
    assert sha256(folder / "a.nrrd") == before and fake.encoded_images == 0


# ---------------------------------------------------------------------------------- names and folders

def test_an_unknown_output_ending_is_refused_not_made_a_folder(case, fake, capsys, tmp_path):
    _refused(capsys, _segment(case, tmp_path / "result.foo"), "result.foo", "not an output file type")
    assert not (tmp_path / "result.foo").exists() and fake.encoded_images == 0


def test_an_existing_folder_named_like_a_file_is_refused_unless_asked_for(case, fake, capsys, tmp_path):
    folder = tmp_path / "x.seg.nrrd"
    folder.mkdir()
    _refused(capsys, _segment(case, folder), "is an existing folder")
    assert list(folder.iterdir()) == [] and fake.encoded_images == 0
    assert main(_segment(case, str(folder) + os.sep)) == 0  # "x.seg.nrrd/": a folder was asked for
    assert_pair_from_one_run(folder / "target.seg.nrrd")


def test_an_output_folder_that_cannot_be_made_is_refused_before_compute(case, fake, capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder", encoding="utf-8")
    _refused(capsys, _segment(case, blocker / "sub" / "out.seg.nrrd"), "is a file")
    assert fake.encoded_images == 0 and blocker.read_text(encoding="utf-8") == "a file, not a folder"


def test_an_unwritable_output_folder_is_refused_before_compute(case, fake, capsys, tmp_path, monkeypatch):
    out = tmp_path / "locked"
    out.mkdir()
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode: False if Path(path) == out else real_access(path, mode))
    _refused(capsys, _segment(case, out / "pred.seg.nrrd"), "cannot write in", str(out))
    assert list(out.iterdir()) == [] and fake.encoded_images == 0


def test_not_enough_free_disk_is_refused_before_compute(case, fake, capsys, tmp_path, monkeypatch):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(1 << 30, (1 << 30) - 4096, 4096))
    _refused(capsys, _segment(case, tmp_path / "out" / "pred.seg.nrrd"), "not enough free disk space", "4.0 KB free")
    assert not (tmp_path / "out").exists() and fake.encoded_images == 0  # the folder made for it is gone again


# ---------------------------------------------------------------------------------- existing outputs

def test_only_a_sidecar_is_enough_to_refuse_before_compute(case, fake, capsys, tmp_path):
    out = tmp_path / "out.seg.nrrd"
    sidecar_path(out).write_text("{}", encoding="utf-8")
    _refused(capsys, _segment(case, out), "out.seg.nrrd.ksam.json", "file exists")
    assert fake.encoded_images == 0 and sidecar_path(out).read_text(encoding="utf-8") == "{}" and not out.exists()


def test_each_output_file_has_its_own_sidecar(case, fake, tmp_path):
    seg, nii = tmp_path / "pred.seg.nrrd", tmp_path / "pred.nii.gz"
    assert main(_segment(case, seg)) == 0
    first = {seg: sha256(seg), sidecar_path(seg): sha256(sidecar_path(seg))}
    assert main(_segment(case, nii)) == 0  # used to replace pred.ksam.json, the .seg.nrrd's provenance
    assert {path: sha256(path) for path in first} == first
    assert_pair_from_one_run(seg)
    assert_pair_from_one_run(nii)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("pred")) == \
        ["pred.nii.gz", "pred.nii.gz.ksam.json", "pred.seg.nrrd", "pred.seg.nrrd.ksam.json"]


def test_a_disk_that_fills_while_writing_is_one_line_and_keeps_the_old_output(case, fake, capsys, tmp_path,
                                                                             monkeypatch):
    import errno

    from KnowledgeSAMLib.data import io as data_io

    out = tmp_path / "pred.seg.nrrd"
    assert main(_segment(case, out)) == 0
    old = {out: sha256(out), sidecar_path(out): sha256(sidecar_path(out))}

    def full_disk(labels):
        def write(temporary):
            temporary.write_bytes(b"the first blocks")
            raise OSError(errno.ENOSPC, "No space left on device")

        return write

    monkeypatch.setattr(data_io, "_seg_nrrd_writer", full_disk)
    capsys.readouterr()
    _refused(capsys, _segment(case, out, "--overwrite"), "could not be written (No space left on device)",
             "nothing was replaced")
    assert {path: sha256(path) for path in old} == old
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_an_output_another_run_holds_is_refused_at_once(case, fake, capsys, tmp_path):
    out = tmp_path / "pred.seg.nrrd"
    with OutputLock(out):
        _refused(capsys, _segment(case, out, "--overwrite"), "another KnowledgeSAM run is writing this output")
    assert fake.encoded_images == 0
    assert main(_segment(case, out)) == 0 and not any(p.name.endswith(".ksam-lock") for p in tmp_path.iterdir())


def test_leftovers_of_an_interrupted_write_are_cleaned_and_never_targets(case, fake, capsys, tmp_path):
    targets, out = tmp_path / "targets", tmp_path / "out"
    targets.mkdir()
    out.mkdir()
    (targets / "a.nrrd").write_bytes(case.target.read_bytes())
    (targets / ".a.0123456789ab.partial.nrrd").write_bytes(b"half a file")  # the older temporary naming
    (targets / ".b.nrrd.0123456789ab.partial.nrrd").write_bytes(b"half a file")
    for name in (".a.seg.nrrd.0123456789ab.partial.seg.nrrd", ".a.seg.nrrd.ksam.json.0123456789ab.partial.json",
                 ".a.0123456789ab.partial.seg.nrrd"):
        (out / name).write_bytes(b"half a file")
    (out / ".a.nii.gz.0123456789ab.partial.nii.gz").write_bytes(b"another output's: kept")
    assert main(["segment", "--quiet", "--target", str(targets), "--reference", str(case.reference),
                 "--reference-labels", str(case.reference_labels), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("left by an interrupted write") == 3, err
    assert sorted(p.name for p in out.iterdir()) == [".a.nii.gz.0123456789ab.partial.nii.gz", "a.seg.nrrd",
                                                      "a.seg.nrrd.ksam.json"]


# ---------------------------------------------------------------------------------- the smaller items

@pytest.mark.parametrize("flag, value", [("--labels", ","), ("--labels", " , "), ("--segments", ",")])
def test_a_list_that_names_nothing_is_not_all(flag, value, case, fake, capsys, tmp_path):
    argv = [a for a in _segment(case, tmp_path / "o.seg.nrrd") if a not in ("--labels", "1")]
    _refused(capsys, argv + [flag, value], flag, "names no")
    assert fake.encoded_images == 0


def test_top_k_is_capped_with_a_warning(case, fake, capsys, tmp_path):
    from KnowledgeSAMLib import choices

    out = tmp_path / "o.seg.nrrd"
    assert main(_segment(case, out, "--top-k", "999")) == 0
    err = capsys.readouterr().err
    assert f"--top-k 999 capped at {choices.MAX_TOP_K}" in err and err.startswith("knowledgesam: warning: ")
    assert assert_pair_from_one_run(out)["options"]["top_k"] == choices.MAX_TOP_K


def test_the_sidecar_does_not_store_the_home_folder(case, fake, tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))  # every input lives under "home"
    out = tmp_path / "o.seg.nrrd"
    assert main(_segment(case, out)) == 0
    text = sidecar_path(out).read_text(encoding="utf-8")
    assert str(tmp_path) not in text
    record = json.loads(text)
    assert record["target"] == "~/x/target.nrrd" and record["reference_labels"] == "~/x/reference.seg.nrrd"


# ---------------------------------------------------------------------------------- the batch script

def test_the_batch_script_plans_with_the_same_rules(case, tmp_path):
    from test_slicer_helpers import load_batch_script

    batch = load_batch_script()
    inputs = [str(case.reference), str(case.reference_labels)]
    with pytest.raises(InputError, match="is the input"):
        batch.planOutputs([str(case.target)], str(case.reference_labels), overwrite=True, inputs=inputs)
    from KnowledgeSAMLib.data.io import read_image, write_image

    nifti = write_image(read_image(case.target), tmp_path / "t.nii.gz")
    with pytest.raises(InputError, match="is the input"):
        batch.planOutputs([str(nifti)], str(nifti), overwrite=True, inputs=inputs)
    with pytest.raises(InputError, match="not an output file type"):
        batch.planOutputs([str(case.target)], str(tmp_path / "result.foo"), inputs=inputs)
    plan = batch.planOutputs([str(case.target)], str(tmp_path / "out.seg.nrrd"), inputs=inputs)
    args = batch.parseArguments(["--target", str(case.target), "--reference", str(case.reference),
                                 "--reference-segmentation", str(case.reference_labels), "--output", plan[0][1]])
    voxels = batch.checkInputFiles(args, plan)
    assert voxels == [6 * 32 * 32]
    claims = batch.claimOutputs(plan, voxels)
    try:
        with pytest.raises(InputError, match="another KnowledgeSAM run"):
            batch.claimOutputs(plan, voxels)
    finally:
        claims.release()
    hostile = tmp_path / "hostile.nrrd"
    hostile.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 1600 1600 1600\nencoding: raw\n\n" + b"\0" * 1000)
    args.reference = str(hostile)
    with pytest.raises(InputError, match="hostile.nrrd"):
        batch.checkInputFiles(args, plan)
