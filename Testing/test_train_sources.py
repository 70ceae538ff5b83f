"""Training sources: phantoms and real datasets become model-size slice cases; held-out cases stay out."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest

from KnowledgeSAMLib.errors import InputError
from KnowledgeSAMLib.train.config import SourceConfig
from KnowledgeSAMLib.train.sources import build_source, build_sources, sources_summary


def test_kidney_and_fundus_phantoms(tmp_path):
    kidney, fundus = build_sources([
        SourceConfig(kind="kidney_phantom", train_cases=2, val_cases=1, shape=[16, 48, 48]),
        SourceConfig(kind="fundus_phantom", train_cases=2, val_cases=1, size=64)], size=32)
    assert [c.name for c in kidney.train] == ["kidney_phantom_0000", "kidney_phantom_0001"]
    assert [c.name for c in kidney.val] == ["kidney_phantom_1000"]
    assert kidney.tasks == ["artery", "medulla", "cortex"] and fundus.tasks == ["disc", "cup"]
    for case in kidney.train + fundus.train:
        assert case.images.dtype == np.uint8 and case.images.shape[1:] == (32, 32, 3)
        assert case.present.any(0).all(), f"{case.name}: every task appears somewhere"
    assert all(c.is_volume and c.n > 1 for c in kidney.train)
    assert all(not c.is_volume and c.n == 1 for c in fundus.train)
    # the cup is nested in the disc
    f = fundus.train[0]
    assert not (f.masks[0, 1].astype(bool) & ~f.masks[0, 0].astype(bool)).any()
    summary = sources_summary([kidney, fundus])
    assert summary["kidney_phantom"]["held_out"] == ["seeds >= 5000 (evaluation phantoms)"]


def test_cache_round_trip(tmp_path):
    cfg = SourceConfig(kind="kidney_phantom", train_cases=1, val_cases=1, shape=[12, 32, 32])
    first = build_source(cfg, 32, "k", cache_dir=tmp_path)
    files = list(tmp_path.glob("*.npz"))
    assert len(files) == 1
    again = build_source(cfg, 32, "k", cache_dir=tmp_path)
    for a, b in zip(first.train + first.val, again.train + again.val):
        assert a.name == b.name and np.array_equal(a.images, b.images) and np.array_equal(a.masks, b.masks)
        assert np.array_equal(a.u, b.u) and a.tasks == b.tasks
    assert again.held_out == first.held_out
    build_source(cfg, 48, "k", cache_dir=tmp_path)  # another model size is another cache entry
    assert len(list(tmp_path.glob("*.npz"))) == 2


def test_unknown_task_is_an_input_error():
    with pytest.raises(InputError, match="kidney_phantom_0000.*nope"):
        build_source(SourceConfig(kind="kidney_phantom", tasks=["nope"], train_cases=1, val_cases=0,
                                  shape=[12, 32, 32]), 32, "k")


def _shared_data():
    from KnowledgeSAMLib.data.datasets import shared_data_root

    root = shared_data_root()
    if not (root / "msd-hippocampus" / "images").is_dir() or not (root / "papila" / "images").is_dir():
        pytest.skip(f"real data not found under {root}")
    return root


def test_real_datasets_keep_their_test_cases_out():
    from KnowledgeSAMLib.data.datasets import hippocampus_cases, hippocampus_split

    root = _shared_data()
    hippo = build_source(SourceConfig(kind="hippocampus", root=str(root / "msd-hippocampus"), train_cases=4,
                                      val_cases=2), 32, "hippocampus")
    test_ids = hippocampus_split(hippocampus_cases(root / "msd-hippocampus")).test
    used = {c.name for c in hippo.train + hippo.val}
    assert len(hippo.train) == 4 and len(hippo.val) == 2 and not used & set(test_ids)
    assert hippo.held_out == list(test_ids) and hippo.tasks == ["head", "body"]
    assert all(c.present.any(0).all() for c in hippo.train)

    papila = build_source(SourceConfig(kind="papila", root=str(root / "papila"), val_cases=0), 32, "papila")
    assert sorted(c.name for c in papila.train) == ["papila_RET028OS", "papila_RET065OD", "papila_RET210OS"]
    assert papila.held_out == ["RET087OS"]
    with pytest.raises(InputError, match="leaves no training case"):
        build_source(SourceConfig(kind="papila", root=str(root / "papila"), val_cases=3), 32, "papila")


def test_tuning_cases_never_reach_training():
    """msd-hippocampus-more's first 40 volumes choose the engine's settings; a training source leaves them out."""
    from KnowledgeSAMLib.data.datasets import hippocampus_cases

    root = _shared_data() / "msd-hippocampus-more"
    if not (root / "images").is_dir():
        pytest.skip(f"{root} not found")
    ids = hippocampus_cases(root)
    kept = build_source(SourceConfig(kind="hippocampus", root=str(root), test_split=False, tuning_cases=40,
                                     train_cases=3, val_cases=1), 32, "more")
    assert [c.name for c in kept.train] == ids[40:43] and [c.name for c in kept.val] == ids[-1:]
    assert not {c.name for c in kept.train + kept.val} & set(ids[:40]) and kept.held_out == ids[:40]  # model card
    with pytest.raises(InputError, match="leaves no case"):
        build_source(SourceConfig(kind="hippocampus", root=str(root), test_split=False, tuning_cases=len(ids)), 32,
                     "none")


def test_kidney_roi_phantom_source():
    roi = build_source(SourceConfig(kind="kidney_roi_phantom", train_cases=1, val_cases=0), 32, "roi")
    case = roi.train[0]
    assert case.name == "kidney_roi_phantom_0000" and roi.tasks == ["artery", "medulla", "cortex"]
    assert case.is_volume and case.present.any(0).all()


def test_a_cache_is_found_again_after_its_dataset_folder_moves():
    """Configs resolve data roots to absolute paths; a cache copied to another machine must still match."""
    from KnowledgeSAMLib.train.sources import _cache_key

    here = SourceConfig(kind="hippocampus", root="/work/shared/data/msd-hippocampus", tasks=["head", "body"])
    there = SourceConfig(kind="hippocampus", root="/root/elsewhere/msd-hippocampus", tasks=["head", "body"])
    other = SourceConfig(kind="hippocampus", root="/work/shared/data/another-set", tasks=["head", "body"])
    fewer = SourceConfig(kind="hippocampus", root="/work/shared/data/msd-hippocampus", tasks=["head", "body"],
                         train_cases=5)
    assert _cache_key(here, 128) == _cache_key(there, 128)
    assert len({_cache_key(here, 128), _cache_key(other, 128), _cache_key(fewer, 128), _cache_key(here, 64)}) == 4
    untuned = SourceConfig(kind="hippocampus", root="/work/shared/data/msd-hippocampus", tasks=["head", "body"],
                           tuning_cases=0)
    assert _cache_key(untuned, 128) == _cache_key(here, 128)  # a setting added later keeps the old caches' keys
    assert _cache_key(replace(here, tuning_cases=40), 128) != _cache_key(here, 128)


def test_reweighting_a_source_keeps_its_cache():
    """The weight only changes how often a source is drawn, never its slices, so its cache must stay valid."""
    from KnowledgeSAMLib.train.sources import _cache_key

    light = SourceConfig(kind="kidney_roi_phantom", weight=0.5, train_cases=400)
    heavy = SourceConfig(kind="kidney_roi_phantom", weight=2.0, train_cases=400)
    shifted = SourceConfig(kind="kidney_roi_phantom", weight=0.5, train_cases=400, seed=400)
    assert _cache_key(light, 128) == _cache_key(heavy, 128) != _cache_key(shifted, 128)


def test_kidney_phantom_organs_as_tasks():
    """anatomy: true makes every organ a task; a random-phase source has the organs only (cortex and medulla are no
    task where they look alike), and its cases ask only for what they show."""
    organs = ["kidney_right", "kidney_left", "liver", "spleen", "aorta", "inferior_vena_cava", "vertebra", "bowel"]
    every, phases = build_sources([
        SourceConfig(kind="kidney_phantom", anatomy=True, train_cases=1, val_cases=0, shape=[16, 64, 64]),
        SourceConfig(kind="kidney_phantom", anatomy=True, phase="random", train_cases=3, val_cases=0, seed=1,
                     shape=[16, 64, 64])], size=32)
    assert every.tasks == ["artery", "medulla", "cortex", *organs]
    assert phases.tasks == organs
    case = every.train[0]
    for task in ("cortex", "vertebra", "liver"):
        assert case.present[:, case.task_index(task)].any(), task
