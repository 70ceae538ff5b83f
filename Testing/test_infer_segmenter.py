"""The Segmenter every front-end calls: model cache, one reference encoding for many targets, checks before
compute, provenance, requests passed through untouched; and the shared target/output path rules."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from KnowledgeSAMLib.errors import CancelledError, InputError
from KnowledgeSAMLib.infer import CancelToken, EngineOptions, SegmentRequest
from KnowledgeSAMLib.infer.paths import expand_targets, plan_outputs, target_name
from KnowledgeSAMLib.infer.segmenter import ModelCache, Segmenter, Sources, check

from test_infer_fakes import ThresholdModel, blob_volume


@pytest.fixture(scope="module")
def reference():
    return blob_volume(shape=(14, 40, 48), seed=1, shift=(1, 2, -1))


@pytest.fixture(scope="module")
def targets():
    return [blob_volume(shape=(10, 40, 48), seed=seed)[0] for seed in (3, 4, 5)]


def _request(target, reference, **kw) -> SegmentRequest:
    image, labels = reference
    return SegmentRequest(target, image, labels, batch_size=4, **kw)


# ------------------------------------------------------------------------------------------ models


def test_model_cache_reuses_until_the_source_changes(tmp_path, monkeypatch):
    from KnowledgeSAMLib.model import registry

    calls = []
    monkeypatch.setattr(registry, "resolve_model", lambda name, sam_checkpoint=None: calls.append(name) or object())
    cache = ModelCache()
    folder = tmp_path / "model"
    folder.mkdir()
    first = cache.get(folder)
    assert cache.get(str(folder)) is first
    assert cache.get(folder, "sam.pth") is not first
    (folder / "model.safetensors").write_bytes(b"retrained")  # the folder changed: load again
    assert cache.get(folder, "sam.pth") is not first
    assert len(calls) == 3


def test_segmenter_loads_its_model_once_through_the_registry(monkeypatch, reference, targets):
    from KnowledgeSAMLib.model import registry

    model = ThresholdModel(image_size=32)
    asked = []
    monkeypatch.setattr(registry, "resolve_model",
                        lambda name, sam_checkpoint=None: asked.append((name, sam_checkpoint)) or model)
    segmenter = Segmenter("my-model-folder", "sam.pth")
    for target in targets[:2]:
        result = segmenter.segment(_request(target, reference))
    assert asked == [("my-model-folder", "sam.pth")]
    assert result.provenance["model"]["source"] == "my-model-folder"


# ------------------------------------------------------------------------------------------ references


def test_one_reference_is_encoded_once_for_many_targets(reference, targets):
    model = ThresholdModel(image_size=32)
    segmenter = Segmenter(model)
    counts = []
    for target in targets:
        before = model.encoded_images
        result = segmenter.segment(_request(target, reference))
        counts.append(result.provenance["counts"]["reference_slices_encoded"])
        assert model.encoded_images - before == counts[-1] + target.shape[0]  # the encoder calls themselves
    assert counts[0] > 0 and counts[1:] == [0, 0]


def test_another_model_does_not_reuse_the_old_encoding(reference, targets):
    first, second = ThresholdModel(image_size=32), ThresholdModel(image_size=32)
    segmenter = Segmenter(first)
    segmenter.segment(_request(targets[0], reference))
    segmenter.use_model(second)
    result = segmenter.segment(_request(targets[1], reference))
    assert result.provenance["counts"]["reference_slices_encoded"] > 0 and second.encoded_images > 0


# ------------------------------------------------------------------------------------------ pass-through


def test_requests_and_options_reach_the_engine_untouched(reference, targets):
    seen = []

    def engine(request, model, progress, cancel):
        seen.append((request, model))
        from KnowledgeSAMLib.infer.request import SegmentationResult

        return SegmentationResult(request.reference_labels, {}, {})

    request = _request(targets[0], reference, options=EngineOptions(top_k=2), keep_probabilities=True)
    result = Segmenter("tiny", engine=engine).segment(request, sources=Sources(target="t.nrrd"))
    assert seen == [(request, "tiny")]  # the very object: new fields flow through without a change here
    assert result.provenance["mode"] == "auto" and result.provenance["axis"] == "axial"
    assert result.provenance["target"] == "t.nrrd" and result.provenance["wall_s"] >= 0


def test_real_engine_result_records_the_front_end_names(reference, targets):
    result = Segmenter(ThresholdModel(image_size=32)).segment(
        _request(targets[0], reference, keep_probabilities=True),
        sources=Sources(target="a.nrrd", reference="atlas.nrrd", reference_labels="atlas.seg.nrrd", model="fake",
                        knowledge_prompt="atlas: bright, dim"))
    record = result.provenance
    assert (record["target"], record["reference"], record["reference_labels"]) == ("a.nrrd", "atlas.nrrd",
                                                                                    "atlas.seg.nrrd")
    assert record["model"]["source"] == "fake" and record["knowledge_prompt"] == "atlas: bright, dim"
    assert record["mode"] == "volume" and result.probabilities is not None


def test_cancel_before_or_during_the_last_batch_returns_nothing(reference, targets):
    token = CancelToken()
    token.cancel()
    with pytest.raises(CancelledError):
        Segmenter(ThresholdModel(image_size=32)).segment(_request(targets[0], reference), cancel=token)
    late = CancelToken()

    def engine(request, model, progress, cancel):
        late.cancel()  # pressed while the engine finished its last batch
        return None

    with pytest.raises(CancelledError):
        Segmenter(engine=engine).segment(_request(targets[0], reference), cancel=late)


# ------------------------------------------------------------------------------------------ checks


def test_check_refuses_a_reference_slice_without_labels_before_compute(reference, targets):
    image, labels = reference
    empty_slice = int(np.flatnonzero(~labels.layers[0].any(axis=(1, 2)))[0])
    with pytest.raises(InputError, match=f"empty in the reference labels on slice\\(s\\) {empty_slice}"):
        check(_request(targets[0], reference, reference_slices=[empty_slice]))
    with pytest.raises(InputError, match="outside"):
        check(_request(targets[0], reference, reference_slices=[99]))
    prepared = check(_request(image, reference, reference_slices=[7]))
    assert prepared.mode == "anchor" and prepared.same_volume


# ------------------------------------------------------------------------------------------ paths


def _touch(folder: Path, *names: str) -> list[Path]:
    paths = []
    for name in names:
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(b"x")
        paths.append(folder / name)
    return paths


def test_output_plans(tmp_path):
    targets = _touch(tmp_path, "case1.nii.gz", "case2.nrrd")
    assert [target_name(t) for t in targets] == ["case1", "case2"]
    assert plan_outputs(targets, tmp_path / "out") == [tmp_path / "out" / "case1.seg.nrrd",
                                                       tmp_path / "out" / "case2.seg.nrrd"]
    assert plan_outputs(targets, f"{tmp_path}/{{name}}-ksam.nii.gz") == [tmp_path / "case1-ksam.nii.gz",
                                                                          tmp_path / "case2-ksam.nii.gz"]
    assert plan_outputs(targets[:1], tmp_path / "one.seg.nrrd") == [tmp_path / "one.seg.nrrd"]
    assert plan_outputs(targets, tmp_path / "o", "nii.gz")[0].name == "case1.nii.gz"


@pytest.mark.parametrize("case, message", [
    ("file name for two", "several targets need an output folder"),
    ("same name twice", "would both be written to"),
    ("existing file", "file exists; not overwriting it"),
    ("existing sidecar", "one.seg.nrrd.ksam.json: file exists"),
    ("file type", "cannot write this file type"),
])
def test_output_plans_refused_before_any_work(tmp_path, case, message):
    one, other = _touch(tmp_path, "a/case.nrrd", "b/case.nrrd")
    with pytest.raises(InputError, match=message):
        if case == "file name for two":
            plan_outputs([one, other], tmp_path / "out.seg.nrrd")
        elif case == "same name twice":
            plan_outputs([one, other], tmp_path / "out")
        elif case == "existing file":
            plan_outputs([one], _touch(tmp_path, "done.seg.nrrd")[0])
        elif case == "existing sidecar":
            _touch(tmp_path, "one.seg.nrrd.ksam.json")
            plan_outputs([one], tmp_path / "one.seg.nrrd", sidecars=True)
        else:
            plan_outputs([one], tmp_path / "x.png", writable=(".seg.nrrd", ".nii.gz"))
    if case == "existing file":
        assert plan_outputs([one], tmp_path / "done.seg.nrrd", overwrite=True)


def test_targets_from_files_folders_and_lists(tmp_path):
    files = _touch(tmp_path, "in/b.nrrd", "in/a.nii.gz", "in/a.seg.nrrd", "in/notes.md")
    listing = tmp_path / "list.txt"
    listing.write_text("in/b.nrrd\n# a comment\n\n", encoding="utf-8")
    assert expand_targets([tmp_path / "in"]) == [files[1], files[0]]
    assert expand_targets([listing]) == [files[0]]
    with pytest.raises(InputError, match="nope.nrrd: target image not found"):
        expand_targets([tmp_path / "nope.nrrd"])
