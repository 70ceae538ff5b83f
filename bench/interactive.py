#!/usr/bin/env python
"""The annotator's loop: Dice against the number of labelled slices, beside Slicer's "Fill between slices".

Held-out data: the 10 test cases of ``../shared/data/msd-hippocampus`` (never trained on), structures head and
body; a TotalSegmentator example CT (liver, model labels: plumbing only) with ``--ct``. For n = 1, 2, 4, 8 labelled
slices (evenly spread over the structures' extent along the axial axis; the annotator labels every structure on a
slice it draws), the rest of the volume comes from:

* **KnowledgeSAM, propagate** — the same volume as its own reference (``--mode propagate``), default settings;
* **Fill between slices** — ITK's morphological contour interpolation, the filter behind Slicer's effect
  (``pip install itk-morphologicalcontourinterpolation``; the row is left out without it); needs ≥ 2 slices;
* **a simulated annotator** — starts from one slice and each round labels the slice KnowledgeSAM is least sure of
  (the IoU head, :func:`~KnowledgeSAMLib.infer.interactive.next_slice_to_check`), updating only the affected slab
  (:func:`~KnowledgeSAMLib.infer.interactive.update_slab`) through one Segmenter that keeps the volume's embeddings;
  its seconds per update are reported.

Writes a Markdown table (``--markdown``, e.g. docs/interactive.md), a plot (``--plot``) and JSON (``--json``)::

    python bench/interactive.py --threads 2 --markdown docs/interactive.md --plot docs/interactive.png \\
        --json docs/interactive.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

COUNTS = (1, 2, 4, 8)


def chosen_slices(truth, view, n: int) -> list[int]:
    """``n`` distinct slices evenly inside the labelled extent (at 1/(n+1), 2/(n+1), …; the middle for n = 1)."""
    present = np.flatnonzero(view.slice_has(truth.layers.max(axis=0) > 0))
    first, last = int(present[0]), int(present[-1])
    picks = np.linspace(first, last, n + 2)[1:-1].round().astype(int)
    chosen = list(dict.fromkeys(int(k) for k in picks))
    spare = [k for k in range(first, last + 1) if k not in chosen]
    while len(chosen) < min(n, last - first + 1):
        chosen.append(spare.pop(len(spare) // 2))
    return sorted(chosen)


def only_slices(truth, view, slices):
    from KnowledgeSAMLib.data.volume import Labels

    layers = np.zeros_like(truth.layers)
    for layer in range(layers.shape[0]):
        for k in slices:
            view.put(layers[layer], k, np.ascontiguousarray(view.get(truth.layers[layer], k)))
    return Labels(layers, truth.geometry, truth.segments, truth.source)


def dice_of(prediction, truth) -> dict[str, float]:
    from KnowledgeSAMLib.evaluation.metrics import dice

    return {seg.name: dice(prediction.mask(seg.name), truth.mask(seg.name)) for seg in truth.segments}


def fill_between(truth, drawn) -> object | None:
    """ITK's morphological contour interpolation of the drawn slices (per label), or None without ITK."""
    try:
        import itk
    except ImportError:
        return None
    from KnowledgeSAMLib.data.volume import Labels

    layers = np.zeros_like(drawn.layers)
    for layer in range(drawn.layers.shape[0]):
        image = itk.image_from_array(np.ascontiguousarray(drawn.layers[layer]).astype(np.uint8))
        out = itk.morphological_contour_interpolator(image)
        layers[layer] = itk.array_from_image(out).astype(drawn.layers.dtype)
    return Labels(layers, truth.geometry, truth.segments, truth.source)


def run_case(name: str, image, truth, segmenter, request_kwargs: dict) -> dict:
    from dataclasses import replace

    from KnowledgeSAMLib.infer import SegmentRequest
    from KnowledgeSAMLib.infer.interactive import next_slice_to_check, update_slab
    from KnowledgeSAMLib.infer.slicing import axis_view

    view = axis_view(image.shape, image.geometry, "axial")
    row: dict = {"case": name, "ksam": {}, "fill": {}, "annotator": {}, "update_s": []}
    first = None  # the one-slice run, where the simulated annotator also starts
    for n in COUNTS:
        ks = chosen_slices(truth, view, n)
        drawn = only_slices(truth, view, ks)
        started = time.perf_counter()
        request = SegmentRequest(image, image, drawn, mode="propagate", **request_kwargs)
        result = segmenter.segment(request)
        if n == 1:
            first = (ks, request, result)
        row["ksam"][n] = {"dice": dice_of(result.labels, truth), "seconds": time.perf_counter() - started,
                          "slices": ks}
        filled = fill_between(truth, drawn) if n >= 2 else None
        if filled is not None:
            row["fill"][n] = {"dice": dice_of(filled, truth)}
    # the simulated annotator: one slice, then always the least confident one
    labelled, request, result = first  # COUNTS starts at 1
    row["annotator"][1] = {"dice": dice_of(result.labels, truth), "slices": list(labelled)}
    while len(labelled) < max(COUNTS):
        confidence = np.nanmin(np.stack([result.confidence[s.name] for s in truth.segments]), axis=0)
        predicted = view.slice_has(result.labels.layers.max(axis=0) > 0)
        k = next_slice_to_check(confidence, predicted, skip=labelled)
        if k is None:  # nothing predicted outside the labelled slices: label the largest unlabelled truth slice
            sizes = [(int(view.get(truth.layers.max(axis=0), j).astype(bool).sum()), j) for j in range(view.n)
                     if j not in labelled]
            k = max(sizes)[1]
        labelled = sorted(labelled + [int(k)])
        corrected = result.labels.layers.copy()
        for layer in range(corrected.shape[0]):  # the annotator redraws slice k correctly
            view.put(corrected[layer], k, np.ascontiguousarray(view.get(truth.layers[layer], k)))
        from KnowledgeSAMLib.data.volume import Labels

        current = Labels(corrected, truth.geometry, truth.segments, truth.source)
        started = time.perf_counter()
        result = update_slab(segmenter.segment, replace(request, reference_labels=current, reference_slices=labelled),
                             k)
        row["update_s"].append(time.perf_counter() - started)
        if len(labelled) in COUNTS:
            row["annotator"][len(labelled)] = {"dice": dice_of(result.labels, truth), "slices": list(labelled)}
    print(f"{name}: " + "  ".join(
        f"n={n} ksam {np.mean(list(row['ksam'][n]['dice'].values())):.3f}"
        + (f" fill {np.mean(list(row['fill'][n]['dice'].values())):.3f}" if n in row['fill'] else "")
        + f" annot {np.mean(list(row['annotator'][n]['dice'].values())):.3f}" for n in COUNTS), flush=True)
    return row


def summarise(rows: list[dict]) -> dict:
    out = {}
    for method in ("ksam", "fill", "annotator"):
        out[method] = {}
        for n in COUNTS:
            values = [np.mean(list(r[method][n]["dice"].values())) for r in rows if n in r[method]]
            if values:
                out[method][n] = {"mean": float(np.mean(values)), "sd": float(np.std(values)), "cases": len(values)}
    updates = [s for r in rows for s in r["update_s"]]
    out["update_s"] = {"mean": float(np.mean(updates)), "max": float(np.max(updates))} if updates else {}
    out["ksam_seconds"] = {n: float(np.mean([r["ksam"][n]["seconds"] for r in rows])) for n in COUNTS}
    return out


def markdown(summary: dict, header: str) -> str:
    names = {"ksam": "KnowledgeSAM propagate (default model)", "fill": "Fill between slices (ITK morphological "
             "contour interpolation)", "annotator": "KnowledgeSAM, annotator labels the least confident slice next"}
    lines = [header, "", "| labelled slices of the target | " + " | ".join(str(n) for n in COUNTS) + " |",
             "|---|" + "---|" * len(COUNTS)]
    for method, title in names.items():
        cells = [f"{summary[method][n]['mean']:.3f}" if n in summary[method] else "—" for n in COUNTS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    if summary.get("update_s"):
        lines += ["", f"Seconds per update of the simulated annotator (slab only, embeddings kept): mean "
                      f"{summary['update_s']['mean']:.2f}, max {summary['update_s']['max']:.2f}. Seconds per full "
                      f"propagate run: " + ", ".join(f"{n} slices {s:.1f}" for n, s in summary["ksam_seconds"].items())]
    return "\n".join(lines) + "\n"


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 3.6), dpi=120)
    for method, label, style in (("ksam", "KnowledgeSAM propagate", "o-"), ("annotator", "… least confident next",
                                                                              "s--"), ("fill", "Fill between slices",
                                                                                       "^-")):
        ns = [n for n in COUNTS if n in summary[method]]
        if ns:
            ax.plot(ns, [summary[method][n]["mean"] for n in ns], style, label=label)
    ax.set_xscale("log", base=2)
    ax.set_xticks(COUNTS, [str(n) for n in COUNTS])
    ax.set_xlabel("labelled slices of the target")
    ax.set_ylabel("mean Dice (held-out hippocampus)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=None, help="held-out hippocampus cases (default: all 10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)

    import torch

    from KnowledgeSAMLib.data import datasets
    from KnowledgeSAMLib.infer.segmenter import Segmenter

    torch.set_num_threads(args.threads)
    segmenter = Segmenter(args.model)
    started = time.perf_counter()
    test_ids = datasets.hippocampus_split(datasets.hippocampus_cases()).test[: args.n]
    rows = []
    for case_id in test_ids:
        image, truth = datasets.load_hippocampus(None, case_id)
        rows.append(run_case(case_id, image, truth, segmenter, {"preset": "mr"}))
    summary = summarise(rows)
    header = (f"Held-out MSD hippocampus ({len(rows)} cases), mean Dice over head and body; model `{args.model}`; "
              f"{platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
              f"{datetime.now(timezone.utc):%Y-%m-%d}; {time.perf_counter() - started:.0f} s. "
              f"Regenerate: `python bench/interactive.py --markdown docs/interactive.md --plot docs/interactive.png "
              f"--json docs/interactive.json`.")
    text = markdown(summary, header)
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.plot:
        plot(summary, args.plot)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "cases": rows}, indent=1, default=float) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
