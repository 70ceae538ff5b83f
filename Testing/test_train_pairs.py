"""Knowledge-prompt pair sampling invariants (spec §5.10), augmentation, and volume -> slice cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment
from KnowledgeSAMLib.train.augment import augment_pair_batch
from KnowledgeSAMLib.train.config import AugmentSection, PairSection
from KnowledgeSAMLib.train.pairs import PairSampler, validation_pairs
from KnowledgeSAMLib.train.sources import volume_to_case
from train_helpers import synthetic_sources


@pytest.fixture(scope="module")
def sources():
    return synthetic_sources(seed=3, n_train=5, n_val=2, size=32, n=14, with_2d=True)


def _cases(sources):
    return {c.name: c for s in sources for c in s.train}


def _draw(sources, cfg=None, batches=60, batch_size=8, seed=0):
    sampler = PairSampler(sources, cfg or PairSection(), seed=seed)
    return [sampler.sample(batch_size) for _ in range(batches)]


def test_arrays_match_the_cases_and_references_contain_the_structure(sources):
    cases = _cases(sources)
    for batch in _draw(sources, batches=30):
        assert batch.target.shape == (8, 32, 32, 3) and batch.ref_mask.shape == (8, 32, 32)
        for i, r in enumerate(batch.refs):
            tc, rc = cases[r.target_case], cases[r.ref_case]
            assert np.array_equal(batch.target[i], tc.images[r.target_row])
            assert np.array_equal(batch.ref_image[i], rc.images[r.ref_row])
            assert np.array_equal(batch.ref_mask[i], rc.masks[r.ref_row, rc.task_index(r.task)])
            assert batch.ref_mask[i].any(), "a reference must show the structure"
            if r.negative:
                assert not batch.target_mask[i].any()
                if r.target_case in cases and r.task in tc.tasks and tc.source == r.source:
                    assert not tc.present[r.target_row, tc.task_index(r.task)]
            else:
                assert np.array_equal(batch.target_mask[i], tc.masks[r.target_row, tc.task_index(r.task)])
                assert batch.target_mask[i].any()
            assert rc.source == r.source  # the reference comes from the task's own source


def test_same_target_with_different_tasks_in_a_batch(sources):
    groups_with_two = groups = 0
    for batch in _draw(sources, batches=40):
        for g in np.unique(batch.group):
            members = [i for i, r in enumerate(batch.refs) if r.group == g]
            labels = [batch.refs[i].label for i in members]
            assert len(set(labels)) == len(labels), "tasks in a group must differ"
            assert len({(batch.refs[i].target_case, batch.refs[i].target_row) for i in members}) == 1
            for i in members[1:]:
                assert np.array_equal(batch.target[i], batch.target[members[0]])
            groups += 1
            groups_with_two += len(members) >= 2
    assert groups_with_two / groups > 0.6


def test_reference_positions(sources):
    cases = _cases(sources)
    cfg = PairSection(same_case_prob=0.4, max_dz=3, max_du=0.05)
    same = cross = 0
    for batch in _draw(sources, cfg, batches=60):
        for r in batch.refs:
            tc, rc = cases[r.target_case], cases[r.ref_case]
            if not rc.is_volume:
                if len(sources[1].train) > 1 and tc.source == rc.source:
                    assert r.ref_case != r.target_case  # 2D: another training image
                continue
            if r.same_case:
                same += 1
                assert r.ref_case == r.target_case
                dz = abs(int(tc.slice_index[r.ref_row]) - int(tc.slice_index[r.target_row]))
                assert 0 < dz <= cfg.max_dz
            elif tc.source == rc.source:
                cross += 1
                assert r.ref_case != r.target_case
                t_rc = rc.task_index(r.task)
                u_target = float(np.clip(tc.u[r.target_row, tc.task_index(r.task)], 0, 1))
                candidates = rc.u[rc.present[:, t_rc], t_rc]
                best = np.min(np.abs(candidates - u_target))
                du = abs(rc.u[r.ref_row, t_rc] - u_target)
                assert du <= max(cfg.max_du, best) + 1e-6
    assert same > 20 and cross > 20
    assert 0.25 < same / (same + cross) < 0.55


def test_negative_fraction_is_about_ten_percent(sources):
    negatives = [r.negative for b in _draw(sources, batches=150) for r in b.refs]
    assert 0.06 < np.mean(negatives) < 0.15
    none = [r.negative for b in _draw(sources, PairSection(negative_fraction=0.0), batches=20) for r in b.refs]
    assert not any(none)


def test_2d_only_source_draws_negatives_from_another_source(sources):
    only_2d_with_other = [sources[1], sources[0]]
    sampler = PairSampler(only_2d_with_other, PairSection(negative_fraction=0.5), seed=1)
    sampler.source_p = np.array([1.0, 0.0])  # groups always start from the 2D source
    found = 0
    for _ in range(30):
        batch = sampler.sample(6)
        for i, r in enumerate(batch.refs):
            if r.negative and r.source == "synth2d":
                assert r.target_case.startswith("s3d_") and not batch.target_mask[i].any()
                found += 1
    assert found > 5


def test_sampling_is_reproducible_and_resumable(sources):
    a = PairSampler(sources, PairSection(), seed=5)
    b = PairSampler(sources, PairSection(), seed=5)
    first = [a.sample(8).refs for _ in range(3)]
    assert first == [b.sample(8).refs for _ in range(3)]
    state = a.state_dict()
    expected = [a.sample(8).refs for _ in range(3)]
    c = PairSampler(sources, PairSection(), seed=99)
    c.load_state_dict(state)
    assert [c.sample(8).refs for _ in range(3)] == expected


def test_validation_pairs_are_deterministic_and_cover_every_val_case_and_task(sources):
    items = validation_pairs(sources, max_slices_per_case=4)
    assert items == validation_pairs(sources, max_slices_per_case=4)
    keys = {(src, task, case.name) for src, task, case, *_ in items}
    assert keys == {(s.name, t, c.name) for s in sources for c in s.val for t in s.tasks}
    for src, task, case, row, ref, ref_row in items:
        assert ref in next(s for s in sources if s.name == src).train
        assert ref.masks[ref_row, ref.task_index(task)].any()


def test_augmentation_is_independent_and_keeps_masks_binary(sources):
    batch = PairSampler(sources, PairSection(), seed=0).sample(8)

    def t(a, image=True):
        x = torch.from_numpy(a).float()
        return x.permute(0, 3, 1, 2) / 255 if image else x[:, None]

    args = (t(batch.target), t(batch.target_mask, False), t(batch.ref_image), t(batch.ref_mask, False))
    # identical inputs, independently transformed: reference and target must end up different
    same = (args[0], args[1], args[0].clone(), args[1].clone())
    out = augment_pair_batch(*same, np.random.default_rng(0), AugmentSection())
    assert [o.shape for o in out] == [a.shape for a in same]
    assert not torch.allclose(out[0], out[2])
    assert set(torch.unique(out[1]).tolist()) <= {0.0, 1.0} and set(torch.unique(out[3]).tolist()) <= {0.0, 1.0}
    assert float(out[0].min()) >= 0 and float(out[0].max()) <= 1
    # masks follow their images: with intensity jitter off, the bright square stays under its mask
    geo_only = AugmentSection(brightness=0, contrast=0, gamma=0, noise=0)
    img, mask, _, _ = augment_pair_batch(*args, np.random.default_rng(1), geo_only)
    square = [i for i, r in enumerate(batch.refs) if r.task == "square" and not r.negative]
    inside = img[square].mean(1, keepdim=True)[mask[square] > 0]
    assert inside.numel() and float(inside.mean()) > 0.6
    # switched off: identity
    off = augment_pair_batch(*args, np.random.default_rng(0), AugmentSection(enabled=False))
    assert all(torch.equal(a, b) for a, b in zip(off, args))


def test_volume_to_case_keeps_the_extent_plus_margin():
    z, y, x = 20, 30, 40
    labels = np.zeros((z, y, x), np.uint8)
    labels[6:12, 10:20, 10:30] = 1
    labels[8:10, 12:15, 12:15] = 2
    image = Image((labels * 100.0 + 10).astype(np.float32), Geometry(spacing=(1.0, 1.0, 2.0)))
    lab = Labels(labels[None], image.geometry, [Segment("outer", 1), Segment("inner", 2)])
    case = volume_to_case("c", "src", image, lab, ["outer", "inner"], "ct-abdomen", 32, "axial", margin=2)
    assert case.images.shape == (10, 32, 32, 3) and case.images.dtype == np.uint8
    assert list(case.slice_index) == list(range(4, 14)) and case.masks.shape == (10, 2, 32, 32)
    assert case.present[:, 0].tolist() == [False] * 2 + [True] * 6 + [False] * 2
    assert case.u[2, 0] == 0 and case.u[7, 0] == 1 and case.u[0, 0] < 0 and case.u[-1, 0] > 1
    assert case.u[4, 1] == 0 and case.u[5, 1] == 1
    # physical aspect kept: 30 x 40 mm -> 24 x 32 pixels, padded symmetrically
    rows = np.flatnonzero(case.images[4, :, 16, 0] > 0)
    assert rows.min() == 4 and rows.max() == 27
    coronal = volume_to_case("c", "src", image, lab, ["outer"], "mr", 32, "coronal", margin=0)
    assert coronal.n == 10 and coronal.present.all()
    assert volume_to_case("c", "src", image, Labels(np.zeros_like(labels)[None], image.geometry,
                                                    [Segment("outer", 1)]), ["outer"], "mr", 32) is None


def test_training_slices_are_what_the_engine_sees_on_a_flipped_volume():
    """MSD hippocampus is stored with direction diag(-1, -1, 1): training must slice it exactly as the engine
    does at inference (canonical orientation), or fixed-task models learn a 180°-rotated anatomy."""
    from KnowledgeSAMLib.data.intensity import get_preset
    from KnowledgeSAMLib.data.resize import SquareFit
    from KnowledgeSAMLib.infer.reference import SliceSource
    from KnowledgeSAMLib.infer.slicing import axis_view

    rng = np.random.default_rng(0)
    labels = np.zeros((12, 20, 16), np.uint8)
    labels[3:9, 2:8, 1:6] = 1  # off-centre: any flip moves it
    image = Image(rng.normal(100, 30, labels.shape).astype(np.float32) + labels * 200,
                  Geometry(spacing=(1.0, 1.0, 1.0), direction=(-1, 0, 0, 0, -1, 0, 0, 0, 1)))
    lab = Labels(labels[None], image.geometry, [Segment("s", 1)])
    case = volume_to_case("c", "src", image, lab, ["s"], "mr", 32, "axial", margin=0)
    view = axis_view(image.shape, image.geometry, "axial")
    assert view.flip_rows and view.flip_cols  # the case this test is about
    src = SliceSource(image, view, get_preset("mr").fit(image), SquareFit(view.slice_shape, view.spacing_hw, 32))
    for row, k in enumerate(range(3, 9)):
        engine = np.clip(np.rint(src.model_image(k) * 255.0), 0, 255)
        engine = engine.transpose(1, 2, 0) if engine.shape[0] == 3 else engine
        assert np.abs(case.images[row].astype(float) - engine).max() <= 1
        mine, theirs = case.masks[row, 0] > 0, src.model_mask(lab, lab.segments[0], k) > 0.5
        assert (mine & theirs).sum() / (mine | theirs).sum() > 0.8  # same place (edges: area vs nearest)
