"""The accuracy benchmark's baselines (prompts, prompted / prompt-free SAM, PerSAM, training loop, U-Net
adapter, 2D atlas, slice-wise runner, report) and ``bench/accuracy.py --quick`` end to end."""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the repository root holds ``bench``
sys.path.insert(0, str(Path(__file__).resolve().parent))  # train_helpers

from bench.baselines.prompt_free import build_prompt_free_sam  # noqa: E402
from bench.baselines.prompted_sam import build_prompted_sam, load_baseline, save_baseline  # noqa: E402
from bench.baselines.prompts import PromptConfig, box_prompt, pack_points, point_prompt  # noqa: E402
from KnowledgeSAMLib.data.volume import Geometry, Image, Labels, Segment  # noqa: E402


# ------------------------------------------------------------------------------------------ prompts
def test_point_prompt_takes_the_deepest_central_pixel_of_each_component_largest_first():
    mask = np.zeros((20, 30), bool)
    mask[2:8, 3:9] = True  # 6×6 square: centre (x, y) ≈ (5.5, 4.5)
    mask[12:19, 15:29] = True  # 7×14 bar (larger): centre ≈ (21.5, 15)
    points = point_prompt(mask, max_points=4)
    assert points.shape == (2, 2)
    assert tuple(points[0]) in {(21.0, 15.0), (22.0, 15.0)}  # largest component first, middle of the bar
    assert tuple(points[1]) in {(5.0, 4.0), (6.0, 5.0), (5.0, 5.0), (6.0, 4.0)}
    assert all(mask[int(y), int(x)] for x, y in points)
    assert point_prompt(mask, max_points=1).shape == (1, 2)
    assert point_prompt(np.zeros((5, 5), bool)).shape == (0, 2)


def test_box_prompt_is_the_bounding_box_jittered_within_limits():
    mask = np.zeros((128, 128), bool)
    mask[40:60, 30:90] = True
    assert box_prompt(mask).tolist() == [30, 40, 89, 59]
    jitter = PromptConfig().box_jitter(128)
    assert jitter == pytest.approx(5.0)  # 20 px at 512 → 5 px at 128
    rng = np.random.default_rng(0)
    boxes = np.stack([box_prompt(mask, jitter, rng) for _ in range(200)])
    assert np.abs(boxes - [30, 40, 89, 59]).max() <= jitter + 1e-6
    assert np.abs(boxes - [30, 40, 89, 59]).max() > jitter / 2  # it does move
    assert box_prompt(np.zeros((8, 8), bool)) is None


def test_pack_points_pads_with_sams_not_a_point_label():
    coords, labels = pack_points([np.array([[1.0, 2.0], [3.0, 4.0]]), np.zeros((0, 2))], max_points=4)
    assert coords.shape == (2, 2, 2) and labels.tolist() == [[1, 1], [-1, -1]]


# ------------------------------------------------------------------------------------------ models
def test_prompted_and_prompt_free_sam_shapes_and_exact_save_load(tmp_path):
    torch.manual_seed(0)
    x = torch.rand(2, 3, 64, 64)
    points = (torch.tensor([[[10.0, 20.0]], [[30.0, 40.0]]]), torch.ones(2, 1, dtype=torch.long))
    boxes = torch.tensor([[5.0, 5.0, 30.0, 40.0], [10.0, 10.0, 50.0, 50.0]])
    point, box = build_prompted_sam("tiny", "point"), build_prompted_sam("tiny", "box")
    assert point(x, points=points).shape == (2, 1, 64, 64)
    assert box(x, boxes=boxes).shape == (2, 1, 64, 64)
    # the prompt matters: another click gives another mask
    assert not torch.allclose(point(x, points=points), point(x, points=(points[0].flip(-1), points[1])))
    free = build_prompt_free_sam("tiny", ["disc", "cup", "artery"])
    assert free(x).shape == (2, 3, 64, 64) and free.channel("cup") == 1
    with pytest.raises(KeyError, match="not in this prompt-free model's head"):
        free.channel("medulla")
    for model, call in ((point, lambda m: m(x, points=points)), (box, lambda m: m(x, boxes=boxes)),
                        (free, lambda m: m(x))):
        model.eval()
        loaded = load_baseline(save_baseline(model, tmp_path / model.kind)).eval()
        assert type(loaded) is type(model)
        assert torch.equal(call(model), call(loaded))


def test_same_backbone_as_ksam():
    from KnowledgeSAMLib import build_model

    ksam, point = build_model("small"), build_prompted_sam("small", "point")
    ksam_encoder = {k: v.shape for k, v in ksam.image_encoder.state_dict().items()}
    assert {k: v.shape for k, v in point.image_encoder.state_dict().items()} == ksam_encoder
    trainable = lambda m: sum(p.numel() for p in m.image_encoder.parameters() if p.requires_grad)  # noqa: E731
    assert trainable(point) == trainable(ksam)


# ------------------------------------------------------------------------------------------ training
def _cfg(steps: int = 4, batch: int = 4):
    from KnowledgeSAMLib.train.config import config_from_dict

    return config_from_dict({"data": {"sources": [{"kind": "fundus_phantom"}]},
                             "optim": {"batch_size": batch, "epochs": 1, "steps_per_epoch": steps, "warmup_steps": 1,
                                       "lr": 1e-3}, "run": {"seed": 3}})


@pytest.mark.parametrize("kind", ["point", "box", "prompt_free"])
def test_train_baseline_is_reproducible_and_changes_the_weights(kind):
    from train_helpers import synthetic_sources

    from bench.baselines.train_baseline import all_structures, seed_everything, train_baseline

    sources = synthetic_sources(size=64)
    results, states = [], []
    for _ in range(2):
        seed_everything(3)
        model = build_prompt_free_sam("tiny", all_structures(sources)) if kind == "prompt_free" else \
            build_prompted_sam("tiny", kind)
        before = {k: v.clone() for k, v in model.state_dict().items()}
        results.append(train_baseline(model, _cfg(), sources))
        states.append(model.state_dict())
    assert results[0].steps == 4 and results[0].pairs_used > 0
    assert results[0].last_loss == results[1].last_loss
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])
    assert any(not torch.equal(before[k], states[0][k]) for k in before)


def test_prompt_free_masks_leave_unlabelled_structures_out_of_the_loss():
    from train_helpers import synthetic_sources

    from bench.baselines.train_baseline import _all_masks
    from KnowledgeSAMLib.train.pairs import PairSampler

    sources = synthetic_sources(size=64)
    batch = PairSampler(sources, _cfg().pairs, seed=0).sample(4)
    cases = {c.name: c for s in sources for c in s.train}
    masks, known = _all_masks(batch, cases, ["disc", "artery", "square"])
    assert known[:, 0].all() and not known[:, 1].any() and known[:, 2].all()
    for i, ref in enumerate(batch.refs):
        case = cases[ref.target_case]
        assert np.array_equal(masks[i, 0], case.masks[ref.target_row, case.task_index("disc")])
        assert not masks[i, 1].any()


# ------------------------------------------------------------------------------------------ PerSAM
def test_persam_prototype_similarity_points_and_gate():
    from bench.baselines.persam import gate_threshold, point_pair, prototype, similarity

    emb = torch.zeros(1, 4, 8, 8)
    emb[0, 0] = 1.0  # background feature
    emb[0, :, 2:4, 5:7] = torch.tensor([0.0, 1.0, 0.0, 0.0]).view(4, 1, 1)  # the structure's feature
    mask = torch.zeros(1, 1, 64, 64)
    mask[..., 16:32, 40:56] = 1  # exactly the cells (2..3, 5..6) at 8 px per cell
    proto = prototype(emb, mask)
    assert torch.allclose(proto, torch.tensor([0.0, 1.0, 0.0, 0.0]))
    target = torch.roll(emb, shifts=(3, -4), dims=(2, 3))  # the structure moved to cells (5..6, 1..2)
    sim = similarity(target, proto, 64)
    coords, labels = point_pair(sim)
    x, y = coords[0, 0].tolist()
    assert 8 <= x < 24 and 40 <= y < 56 and labels.tolist() == [[1, 0]]
    assert gate_threshold(np.array([0.9, 0.8]), np.array([0.2, 0.4])) == pytest.approx(0.575)
    assert gate_threshold(np.array([0.9]), np.array([])) == -np.inf
    with pytest.raises(ValueError, match="empty"):
        prototype(emb, torch.zeros(1, 1, 64, 64))


# ------------------------------------------------------------------------------------------ U-Net adapter
def test_class_coding_handles_nested_and_disjoint_structures():
    from bench.baselines.unet_adapter import ClassCoding
    from KnowledgeSAMLib.train.sources import SliceCase

    masks = np.zeros((1, 2, 8, 8), np.uint8)
    masks[0, 0, 1:7, 1:7] = 1  # disc
    masks[0, 1, 3:5, 3:5] = 1  # cup inside the disc
    case = SliceCase("c", "s", np.zeros((1, 8, 8, 3), np.uint8), masks, ["disc", "cup"], np.arange(1), False)
    coding = ClassCoding.from_cases([case], ["disc", "cup"])
    assert coding.classes == 3 and coding.patterns == ((True, False), (True, True))
    labelmap = coding.encode(masks[:, [0, 1]])
    assert np.array_equal(coding.decode(labelmap, "disc")[0], masks[0, 0].astype(bool))
    assert np.array_equal(coding.decode(labelmap, "cup")[0], masks[0, 1].astype(bool))


# ------------------------------------------------------------------------------------------ atlas 2D
def _disc_image(centre, radius, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:96, :96]
    disc = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= radius ** 2
    cup = (yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 <= (radius / 2) ** 2
    grey = 60 + 0.3 * xx + 90 * disc + 60 * cup + rng.normal(0, 3, (96, 96))
    rgb = np.clip(np.stack([grey, grey * 0.8, grey * 0.5], -1), 0, 255).astype(np.uint8)
    geometry = Geometry(ndim=2)
    layers = np.stack([disc.astype(np.uint8), cup.astype(np.uint8) * 2])[:, None]
    return (Image(rgb[None], geometry, f"disc {seed}"),
            Labels(layers, geometry, [Segment("disc", 1, 0), Segment("cup", 2, 1)], f"disc {seed}"))


def test_atlas_2d_registration_recovers_a_moved_scaled_disc():
    from bench.baselines.atlas2d import Atlas2DConfig, atlas_segment_2d
    from KnowledgeSAMLib.evaluation.metrics import dice

    reference, reference_labels = _disc_image((40, 44), 16, 0)
    target, truth = _disc_image((52, 50), 20, 1)
    unregistered = dice(reference_labels.mask("disc"), truth.mask("disc"))
    labels = atlas_segment_2d(target, reference, reference_labels, Atlas2DConfig(stages="affine"))
    assert labels.shape == target.shape and [s.name for s in labels.segments] == ["disc", "cup"]
    assert unregistered < 0.6
    assert dice(labels.mask("disc"), truth.mask("disc")) > 0.9
    assert dice(labels.mask("cup"), truth.mask("cup")) > 0.8


# ------------------------------------------------------------------------------------------ slice-wise
def test_slicewise_model_masks_go_back_onto_the_exact_target_grid():
    from bench.baselines.slicewise import paste, slice_source, truth_on_model
    from KnowledgeSAMLib.evaluation.metrics import dice

    labelmap = np.zeros((6, 40, 50), np.uint8)
    labelmap[1:5, 10:30, 12:40] = 1
    geometry = Geometry(spacing=(0.8, 1.2, 3.0))
    image = Image(labelmap.astype(np.float32) * 100, geometry, "box")
    labels = Labels(labelmap[None], geometry, [Segment("box", 1, 0)], "box")
    src = slice_source(image, "mr", 64)
    truth = truth_on_model(src, labels, "box")
    assert truth.shape == (6, 64, 64) and truth[0].sum() == 0 and truth[2].sum() > 0
    back = paste(src, {k: truth[k].astype(np.float32) for k in range(6)})
    assert back.shape == labelmap.shape
    assert dice(back, labelmap == 1) > 0.95


# ------------------------------------------------------------------------------------------ report
def test_report_lists_every_method_even_those_not_run_and_draws_a_chart(tmp_path):
    from PIL import Image as PILImage

    from bench.baselines.report import METHODS, Record, bar_chart, comparison_lines, dataset_verdicts, markdown_table

    records = [Record("fundus", "ksam_same", f"c{i}", 0, {"disc": 0.9, "cup": 0.7 + 0.1 * i}, 1.0) for i in range(2)]
    records += [Record("fundus", "atlas", f"c{i}", None, {"disc": 0.6, "cup": 0.5}, 3.0) for i in range(2)]
    lines = markdown_table(records, ["disc", "cup"], {"unet": "why not"})
    assert len(lines) == 2 + len(METHODS)
    assert any("KSAM (same budget) | 0.900 ± 0.000 | 0.750 ± 0.071 | **0.825 ± 0.035**" in line for line in lines)
    assert any(line.startswith("| 2D U-Net") and "why not" in line and "| 0 |" in line for line in lines)
    text = "\n".join(comparison_lines(records, ["disc", "cup"], "ksam_same"))
    assert "beats Atlas registration" in text and "KSAM better on disc, cup" in text
    both = records + [Record("fundus", "ksam_default", "c0", 0, {"disc": 0.5, "cup": 0.4}, 1.0)]
    verdicts = dataset_verdicts(both, "Fundus", ["disc", "cup"])
    assert verdicts[0] == "Fundus:" and verdicts.count("Fundus:") == 1 and verdicts[-1] == ""
    assert any("KSAM (default model), mean 0.450" in v for v in verdicts)
    assert any("KSAM (same budget), mean 0.825" in v for v in verdicts)
    assert dataset_verdicts(records[2:], "Fundus", ["disc", "cup"]) == []  # no KSAM row, no heading
    png = bar_chart([("Fundus", ["disc", "cup"], records)], tmp_path / "chart.png", title="t")
    with PILImage.open(png) as img:
        assert img.size[0] == 1400 and img.size[1] > 300


# ------------------------------------------------------------------------------------------ the script
def test_full_run_refuses_clearly_without_the_default_model(monkeypatch, capsys, tmp_path):
    import bench.accuracy as accuracy
    import KnowledgeSAMLib.model.registry as registry
    from KnowledgeSAMLib.errors import WeightsError

    def missing(*args, **kwargs):
        raise WeightsError("Resources/Models/default: the embedded default model is missing")

    monkeypatch.setattr(registry, "resolve_model", missing)
    assert accuracy.main(["--work-dir", str(tmp_path), "--out", str(tmp_path / "r.md")]) == 2
    err = capsys.readouterr().err
    assert "default model is missing" in err and "--quick" in err
    assert not (tmp_path / "r.md").exists()


@pytest.mark.slow
def test_quick_run_end_to_end_writes_every_row(tmp_path):
    import bench.accuracy as accuracy
    from bench.baselines.protocol import DATASETS, dataset_available
    from bench.baselines.report import METHODS

    out = tmp_path / "results.md"
    # two phantom datasets the models train on, and the real-CT check whose organs no fixed head knows; the
    # other datasets take the same code path at many times the cost (kept out of the 10-minute suite)
    chosen = ["kidney", "fundus", "real_ct"]
    assert accuracy.main(["--quick", "--datasets", ",".join(chosen), "--no-litemedsam",
                          "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    text = out.read_text()
    payload = json.loads(out.with_suffix(".json").read_text())
    assert out.with_suffix(".png").stat().st_size > 1000
    assert "wall time" in text and "--quick smoke run" in text and "Hardware:" in text
    ran = [k for k in chosen if dataset_available(k, None) is None]
    assert {"kidney", "fundus"} <= set(ran)
    assert {r["dataset"] for r in payload["records"]} == set(ran)
    for key in chosen:
        section = text.split(f"## {DATASETS[key].title}")[1].split("\n## ")[0]
        if key not in ran:
            assert "Not run:" in section
            continue
        for method in METHODS:  # every row, run or not
            assert f"| {method.name} |" in section, (key, method.name)
        methods = {r["method"] for r in payload["records"] if r["dataset"] == key}
        expected = {"ksam_same", "atlas", "point", "box", "persam"}
        if key in ("kidney", "fundus", "hippocampus", "papila"):  # a U-Net is trained per training dataset
            expected.add("unet")
        if key != "real_ct":  # the fixed head knows these names; real CT's organs it cannot be asked for
            expected.add("prompt_free")
        else:
            assert "prompt_free" not in methods and "unet" not in methods
        assert expected <= methods, (key, expected - methods)
        for record in (r for r in payload["records"] if r["dataset"] == key):
            assert set(record["dice"]) == set(DATASETS[key].structures)
            assert all(0.0 <= v <= 1.0 for v in record["dice"].values()) and record["seconds"] > 0
    unseen = [r for r in payload["records"] if r["method"] == "prompt_free_unseen"]
    assert unseen and all(r["dataset"] == "kidney" for r in unseen)
    assert "not run: no SAM checkpoint supplied (--sam-checkpoint PATH)" in text
    # a second run goes on where the first stopped: same models, every pair's records reused, nothing re-scored
    again = tmp_path / "again.md"
    assert accuracy.main(["--quick", "--datasets", ",".join(chosen), "--no-litemedsam",
                          "--work-dir", str(tmp_path / "work"), "--out", str(again)]) == 0
    second = json.loads(again.with_suffix(".json").read_text())
    assert second["meta"]["reused_pairs"] == second["meta"]["pairs"] == len(ran)
    assert second["records"] == payload["records"]
    assert f"the records of {len(ran)} of its {len(ran)} evaluated pairs come from earlier runs" in again.read_text()


def test_an_evaluated_pair_is_reused_only_under_the_same_fingerprint(tmp_path):
    from bench.baselines.pair_records import fingerprint, load_pair, pair_path, save_pair
    from bench.baselines.report import Record

    path = pair_path(tmp_path, "kidney_full", "seed 5000 / ref: 6000")
    assert path.parent == tmp_path / "records" / "kidney_full" and "/" not in path.name and " " not in path.name
    key = fingerprint("code1", "model1", {"ksam_same": 12.5}, {"steps": 2000, "quick": False})
    records = [Record("kidney_full", "atlas", "seed 5000", None, {"artery": 0.5}, 3.0)]
    save_pair(path, key, records, [("kidney_full", "point", "seed 5000", "diverged")], 7.5, load=2.25)
    assert load_pair(path, key) == (records, [("kidney_full", "point", "seed 5000", "diverged")], 7.5, 2.25)
    for other in (fingerprint("code2", "model1", {"ksam_same": 12.5}, {"steps": 2000, "quick": False}),
                  fingerprint("code1", "model2", {"ksam_same": 12.5}, {"steps": 2000, "quick": False}),
                  fingerprint("code1", "model1", {"ksam_same": 13.0}, {"steps": 2000, "quick": False}),
                  fingerprint("code1", "model1", {"ksam_same": 12.5}, {"steps": 1000, "quick": False})):
        assert other != key and load_pair(path, other) is None
    assert fingerprint("code1", "model1", {"ksam_same": 12.5}, {"steps": 2000, "quick": False, "threads": 2}) == key
    path.write_text("{not json", encoding="utf-8")
    assert load_pair(path, key) is None
    assert load_pair(tmp_path / "missing.json", key) is None


def test_reused_models_must_match_the_runs_budget(tmp_path):
    import bench.accuracy as accuracy

    budget = {"model": "small", "steps": 2000, "batch_size": 8, "lr": 5e-4, "seed": 0, "sources": ["fundus_phantom"]}
    assert accuracy._remember(tmp_path, 12.5, budget) == 12.5
    assert accuracy._recall(tmp_path, dict(budget)) == 12.5  # same budget: reused with its stored time
    with pytest.raises(SystemExit, match=r"another budget \(steps 2000 -> 1000\).*--work-dir"):
        accuracy._recall(tmp_path, {**budget, "steps": 1000})
    assert math.isnan(accuracy._recall(tmp_path / "never-trained", budget))
    (tmp_path / "old").mkdir()  # trained before budgets were recorded (e.g. on the old slicing): refused
    (tmp_path / "old" / accuracy._SECONDS_FILE).write_text(json.dumps({"seconds": 3.0}), encoding="utf-8")
    with pytest.raises(SystemExit, match="another budget"):
        accuracy._recall(tmp_path / "old", budget)


@pytest.mark.slow
def test_a_method_failing_on_one_case_scores_zero_and_is_named(tmp_path, monkeypatch):
    """A diverging registration must not end a two-hour benchmark: that case scores 0 and the table says so."""
    import bench.accuracy as accuracy
    import bench.atlas_registration as atlas

    def diverges(*args, **kwargs):
        raise RuntimeError("ITK ERROR: All samples map outside moving image buffer.")

    monkeypatch.setattr(atlas, "atlas_segment", diverges)
    out = tmp_path / "results.md"
    assert accuracy.main(["--quick", "--datasets", "kidney", "--no-litemedsam",
                          "--work-dir", str(tmp_path / "work"), "--out", str(out)]) == 0
    records = json.loads(out.with_suffix(".json").read_text())["records"]
    atlas_rows = [r for r in records if r["method"] == "atlas"]
    assert atlas_rows and all(set(r["dice"].values()) == {0.0} for r in atlas_rows)
    assert any(r["method"] == "ksam_same" for r in records)  # the other methods still ran
    text = out.read_text()
    assert "failed on seed 5000 (scored 0): ITK ERROR: All samples map outside moving image buffer." in text


def test_a_ksam_run_stopped_before_its_first_checkpoint_is_set_aside_and_retrained(tmp_path, monkeypatch):
    """A benchmark killed in KSAM's first epoch leaves only logs: the rerun must train again (the Trainer
    refuses a folder holding a run), keeping those logs under ``<run>.interrupted`` instead of deleting them."""
    import bench.accuracy as accuracy
    import KnowledgeSAMLib.train.trainer as trainer_module
    from KnowledgeSAMLib.train.config import apply_overrides, load_config

    out = tmp_path / "ksam_same"
    out.mkdir()
    (out / "train_log.csv").write_text("step,loss\n1,0.9\n", encoding="utf-8")
    cfg = apply_overrides(load_config(REPO / "configs" / "tiny_smoke.yaml"), [f"run.out_dir={out}"])
    seen: dict = {}

    class RecordingTrainer:
        def __init__(self, cfg, model=None, sources=None, resume=None):
            seen["resume"], seen["folder_was_free"] = resume, not Path(cfg.run.out_dir).exists()
            self.model = torch.nn.Linear(1, 1)

        def fit(self):
            return None

    monkeypatch.setattr(trainer_module, "Trainer", RecordingTrainer)
    model, seconds = accuracy._ksam(cfg, sources=None)
    assert seen == {"resume": None, "folder_was_free": True}
    assert (tmp_path / "ksam_same.interrupted" / "train_log.csv").read_text(encoding="utf-8").endswith("0.9\n")
    assert seconds >= 0 and accuracy._recall(out, accuracy._budget_of(cfg)) == seconds


def test_timings_taken_on_a_busy_machine_are_named_in_the_report(tmp_path, monkeypatch):
    import os

    import bench.accuracy as accuracy
    from bench.load_watch import LoadWatch, busy

    loads = iter([1.0, 4.0, 4.0, 4.0])
    monkeypatch.setattr(os, "getloadavg", lambda: (next(loads, 4.0), 0.0, 0.0))
    with LoadWatch(every_s=60.0) as watch:  # sampled at the start and the end only
        pass
    assert watch.mean == 2.5
    assert busy(2.5, threads=1) and not busy(2.5, threads=2) and not busy(None, 1) and not busy(float("nan"), 1)
    budget = {"model": "tiny"}
    accuracy._remember(tmp_path / "seed0" / "ksam_same", 10.0, budget, load=3.9)
    accuracy._remember(tmp_path / "seed0" / "point", 5.0, budget, load=2.1)
    accuracy._remember(tmp_path / "seed0" / "box", 5.0, budget)  # load unknown: not flagged
    assert accuracy._recall(tmp_path / "seed0" / "ksam_same", budget) == 10.0
    assert accuracy.busy_trainings(tmp_path, threads=2) == ["seed0/ksam_same"]
    line = accuracy.busy_lines({"busy_trainings": ["seed0/ksam_same"], "busy_pairs": ["kidney seed 5000"]})
    assert len(line) == 1 and "seed0/ksam_same" in line[0] and "1 pair(s) (kidney seed 5000)" in line[0]
    assert accuracy.busy_lines({"busy_trainings": [], "busy_pairs": []}) == []
