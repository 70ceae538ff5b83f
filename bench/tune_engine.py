#!/usr/bin/env python
"""Choose the engine's volume-mode defaults on *validation* pairs only (never the held-out test cases).

The engine's retrieval (which reference slice answers which target slice: ``position_prior``, ``top_k``,
``position_weight``) and post-processing (``overlap``, ``contested``, ``smooth_z``, ``largest_component``,
``threshold``) were chosen with one model; a better model can prefer other settings. This script scores a
small grid in four rounds — retrieval first, then post-processing on the best retrieval, then the threshold
on the best of both, then flip test-time augmentation (``flip_tta``, twice the compute) on the best so far —
and prints mean Dice per structure for each setting, so a change of default is a measured decision
(``EngineOptions``'s docstring records the numbers it was taken on). The post-processing rounds re-threshold
the stored probabilities of the best retrieval (``relabel``) instead of running the model again.

Validation pairs (the training configs' validation cases, with training cases as references):
kidney ROI phantoms 1000–1002, each with references 0–3 (12 pairs; with only references 0 and 1 the
scan-position prior's failure on references whose kidney sits elsewhere in the scan went unseen), MSD
hippocampus 057, 058, 060 with references 001, 003, 004 (skipped when the data folder is absent), and with
``--wide``: whole-abdomen kidney phantoms 4000–4001 (references 3000–3001, the ``lite`` default model's
whole-abdomen source) and fundus phantoms 1000–1003 (references 0–3), where the region of interest matters.
The unseen-generator phantoms are never used here.

With ``--roi`` the first round also scores ``roi`` (``auto`` against whole slices, ``none``).

    python bench/tune_engine.py --model default --threads 2 --json runs/tune_engine.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.evaluate_model import DATASETS  # noqa: E402  (each dataset's intensity preset)
from KnowledgeSAMLib.evaluation.metrics import dice  # noqa: E402
from KnowledgeSAMLib.infer import EngineOptions, SegmentRequest, relabel, segment  # noqa: E402

HIPPOCAMPUS_VALIDATION = [("hippocampus_057", "hippocampus_001"), ("hippocampus_058", "hippocampus_003"),
                          ("hippocampus_060", "hippocampus_004")]


def validation_pairs(kidney_references: int, wide: bool = False) -> list[tuple[str, str, tuple]]:
    """``(dataset, pair name, (target, truth, reference, reference labels))`` for every validation pair."""
    from KnowledgeSAMLib.data import datasets
    from KnowledgeSAMLib.data.phantoms import make_fundus_phantom, make_kidney_phantom, make_kidney_roi_phantom
    from KnowledgeSAMLib.errors import InputError

    pairs = []
    if wide:
        for target_seed, reference_seed in ((4000, 3000), (4001, 3001)):
            target, truth = make_kidney_phantom(target_seed, shape=(40, 224, 224))
            reference, labels = make_kidney_phantom(reference_seed, shape=(40, 224, 224))
            pairs.append(("kidney_wide", f"{target_seed}<-{reference_seed}", (target, truth, reference, labels)))
        for target_seed, reference_seed in ((1000, 0), (1001, 1), (1002, 2), (1003, 3)):
            target, truth = make_fundus_phantom(target_seed)
            reference, labels = make_fundus_phantom(reference_seed)
            pairs.append(("fundus", f"{target_seed}<-{reference_seed}", (target, truth, reference, labels)))
    for target_seed in (1000, 1001, 1002):
        target, truth = make_kidney_roi_phantom(target_seed)
        for reference_seed in range(kidney_references):
            reference, labels = make_kidney_roi_phantom(reference_seed)
            pairs.append(("kidney", f"{target_seed}<-{reference_seed}", (target, truth, reference, labels)))
    try:
        for target_id, reference_id in HIPPOCAMPUS_VALIDATION:
            target, truth = datasets.load_hippocampus(None, target_id)
            reference, labels = datasets.load_hippocampus(None, reference_id)
            pairs.append(("hippocampus", f"{target_id}<-{reference_id}", (target, truth, reference, labels)))
    except InputError as error:
        print(f"hippocampus skipped: {error}", flush=True)
    return pairs


PRESETS = {"kidney": DATASETS["kidney_roi_phantom"][1], "hippocampus": DATASETS["hippocampus"][1],
           "kidney_wide": "ct-abdomen", "fundus": "rgb"}


_EMBEDDINGS = None  # one cache for the whole grid: every volume is encoded once, whatever the setting


def run_pairs(model, pairs, options: EngineOptions, roi: str = "auto") -> list:
    """``(request, result)`` per pair, probabilities kept so post-processing can be re-scored for free."""
    global _EMBEDDINGS
    from KnowledgeSAMLib.infer.reference import ReferenceCache

    if _EMBEDDINGS is None:
        _EMBEDDINGS = ReferenceCache()
    runs = []
    for dataset, _, (target, truth, reference, labels) in pairs:
        request = SegmentRequest(target, reference, labels, mode="volume", preset=PRESETS[dataset],
                                 options=options, keep_probabilities=True, roi=roi)
        runs.append((request, segment(request, model, reference_cache=_EMBEDDINGS)))
    return runs


def score(pairs, predictions) -> dict[str, float]:
    """Mean Dice per ``dataset/structure`` (one predicted :class:`Labels` per pair) and their mean."""
    per: dict[str, list[float]] = {}
    for (dataset, _, (target, truth, reference, labels)), predicted in zip(pairs, predictions):
        for s in labels.segments:
            per.setdefault(f"{dataset}/{s.name}", []).append(dice(predicted.mask(s.name), truth.mask(s.name)))
    means = {k: float(np.mean(v)) for k, v in per.items()}
    means["mean"] = float(np.mean(list(means.values())))
    return means


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--kidney-references", type=int, default=4)
    parser.add_argument("--wide", action="store_true", help="also whole-abdomen kidney and fundus phantom pairs")
    parser.add_argument("--roi", action="store_true", help="first round: roi auto against whole slices")
    parser.add_argument("--priors", default="scan,two-pass,aligned,none",
                        help="position priors of the retrieval round (comma-separated)")
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    import torch

    from KnowledgeSAMLib.model.registry import resolve_model

    if args.threads:
        torch.set_num_threads(args.threads)
    model = resolve_model(args.model).eval()
    pairs = validation_pairs(args.kidney_references, args.wide)
    started = time.perf_counter()
    rows = []
    computed: dict[str, list] = {}  # retrieval setting -> (request, result) per pair

    def record(round_name: str, changed: dict, result: dict) -> None:
        rows.append({"round": round_name, "options": changed, "dice": result})
        print(f"{round_name:10s} {json.dumps(changed):90s} mean {result['mean']:.3f}  "
              + " ".join(f"{k.split('/')[-1]} {v:.3f}" for k, v in result.items() if k != "mean"), flush=True)

    roi_choice = {"roi": "auto"}

    def run(round_name: str, changed: dict, roi: str | None = None) -> None:
        """Run the model on every pair (retrieval and test-time settings change the probabilities)."""
        runs = run_pairs(model, pairs, replace(default, **changed), roi=roi or roi_choice["roi"])
        computed[json.dumps(changed, sort_keys=True)] = runs
        record(round_name, {**changed, **({"roi": roi} if roi else {})},
               score(pairs, [result.labels for _, result in runs]))

    def rescore(round_name: str, retrieval: dict, changed: dict) -> None:
        """Post-processing only: re-threshold the stored probabilities of ``retrieval`` (no model run)."""
        retrieval = {k: v for k, v in retrieval.items() if k != "roi"}
        runs = computed[json.dumps(retrieval, sort_keys=True)]
        labels = [relabel(request, result, replace(default, **retrieval, **changed)) for request, result in runs]
        record(round_name, {**retrieval, **changed}, score(pairs, labels))

    def best_of(round_name: str) -> dict:
        return max((r for r in rows if r["round"] == round_name), key=lambda r: r["dice"]["mean"])["options"]

    default = replace(EngineOptions(), flip_tta=False)  # the last round scores the flips on the best setting
    if args.roi:  # where the model looks, with the default retrieval and post-processing
        for roi in ("auto", "none"):
            run("roi", {}, roi=roi)
        roi_choice["roi"] = max((r for r in rows if r["round"] == "roi"), key=lambda r: r["dice"]["mean"])["options"]["roi"]
        computed.clear()
    # top-1 has beaten top-2/3 fusion with every model so far (stage 6-9), so only top-1 is scored
    priors = [p.strip() for p in args.priors.split(",") if p.strip()]
    retrieval = [dict(position_prior=p, top_k=1, position_weight=w)
                 for p, w in itertools.product(priors, (0.5, 2.0))
                 if not (p == "none" and w != 0.5)]  # without a position prior the weight does nothing
    for changed in retrieval:
        run("retrieval", changed)
    best_retrieval = best_of("retrieval")
    post = [dict(overlap=o, contested=k, smooth_z=z, largest_component=c)
            for o, k, z, c in itertools.product(("auto", "layers"), ("smaller", "probability"), (False, True),
                                                (False, True)) if not (o == "layers" and k == "probability")]
    for changed in post:
        rescore("post", best_retrieval, changed)
    best_post = best_of("post")
    post_only = {k: v for k, v in best_post.items() if k not in best_retrieval}
    for threshold in (0.3, 0.4, 0.6):  # 0.5 (the default) was scored in the post round
        rescore("threshold", best_retrieval, {**post_only, "threshold": threshold})
    best_options = {k: v for k, v in max(rows, key=lambda r: r["dice"]["mean"])["options"].items() if k != "roi"}
    run("flip", {**best_options, "flip_tta": True})
    best = max(rows, key=lambda r: r["dice"]["mean"])
    defaults = {name: getattr(default, name) for name in [*retrieval[0], *post[0]]}
    current = next(r for r in rows if r["round"] == "post"
                   and r["options"] == {**defaults, **best_retrieval})
    summary = {"model": args.model, "pairs": [p[1] for p in pairs], "rows": rows, "best": best, "roi": roi_choice["roi"],
               "wall_s": time.perf_counter() - started, "defaults": defaults}
    print(f"best {json.dumps(best['options'])}: mean {best['dice']['mean']:.3f} "
          f"(best retrieval with default post-processing: {current['dice']['mean']:.3f}); "
          f"{summary['wall_s']:.0f} s", flush=True)
    if args.json:
        args.json.write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
