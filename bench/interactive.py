#!/usr/bin/env python
"""The annotator's loop: Dice against the number of labelled slices, beside Slicer's "Fill between slices".

Held-out data: the 10 test cases of ``../shared/data/msd-hippocampus`` (never trained on), structures head and
body; with ``--ct`` also the TotalSegmentator example CT (kidneys, liver, aorta, IVC; labels from TotalSegmentator's
model, so plumbing only, never an accuracy claim). For n = 1, 2, 4, 8 labelled slices per structure (evenly
spread over that structure's extent along the axial axis), the rest of the volume comes from:

* **KnowledgeSAM, propagate** — the same volume as its own reference (``--mode propagate``), default settings;
* **Fill between slices** — ITK's morphological contour interpolation, the filter behind Slicer's effect
  (``pip install itk-morphologicalcontourinterpolation``; the row is left out without it); needs ≥ 2 slices;
* **a simulated annotator** — starts from one slice per structure and each round corrects (makes exact for every
  structure) the slice "Next slice to check" shows: the most likely-wrong voxels a correction there re-segments,
  predicted area × (1 − IoU-head confidence) spread over the slice's gap between labelled slices and summed over
  the structures (:func:`~KnowledgeSAMLib.infer.interactive.slice_to_check`); n counts
  its start plus n − 1 corrections. Each
  round updates only the affected slab
  (:func:`~KnowledgeSAMLib.infer.interactive.update_slab`) through one Segmenter that keeps the volume's embeddings;
  its seconds per update are reported.

Writes a Markdown table (``--markdown``, e.g. docs/interactive.md), a plot (``--plot``) and JSON (``--json``)::

    python bench/interactive.py --threads 2 --ct --markdown docs/interactive.md --plot docs/interactive.png \\
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


def chosen_slices(truth, view, n: int) -> dict[str, list[int]]:
    """Per structure, ``n`` distinct slices evenly inside *its* extent (at 1/(n+1), 2/(n+1), …; the middle for
    n = 1): the annotator labels each structure on n slices where it is. (One set for all structures fails
    where they do not share slices: hippocampus_045's middle slice holds no head.)"""
    picks = {}
    for seg in truth.segments:
        present = np.flatnonzero(view.slice_has(truth.layers[seg.layer] == seg.label_value))
        first, last = int(present[0]), int(present[-1])
        chosen = list(dict.fromkeys(int(k) for k in np.linspace(first, last, n + 2)[1:-1].round().astype(int)))
        spare = [k for k in range(first, last + 1) if k not in chosen]
        while len(chosen) < min(n, last - first + 1):
            chosen.append(spare.pop(len(spare) // 2))
        picks[seg.name] = sorted(chosen)
    return picks


def only_slices(truth, view, picks: dict[str, list[int]]):
    """The truth of each structure on its picked slices only (what the annotator drew)."""
    from KnowledgeSAMLib.data.volume import Labels

    layers = np.zeros_like(truth.layers)
    for seg in truth.segments:
        own = truth.layers[seg.layer] == seg.label_value
        for k in picks[seg.name]:
            drawn = view.get(layers[seg.layer], k).copy()
            drawn[view.get(own, k)] = seg.label_value
            view.put(layers[seg.layer], k, np.ascontiguousarray(drawn))
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

    # ITK 5.4.7's multi-threaded contour interpolator corrupts the heap now and then (glibc aborts the process,
    # seen on 8-slice hippocampus inputs); one thread is stable and gives the same masks
    itk.MultiThreaderBase.SetGlobalDefaultNumberOfThreads(1)
    layers = np.zeros_like(drawn.layers)
    for layer in range(drawn.layers.shape[0]):
        image = itk.image_from_array(np.ascontiguousarray(drawn.layers[layer]).astype(np.uint8))
        out = itk.morphological_contour_interpolator(image)
        layers[layer] = itk.array_from_image(out).astype(drawn.layers.dtype)
    return Labels(layers, truth.geometry, truth.segments, truth.source)


def run_case(name: str, image, truth, segmenter, request_kwargs: dict) -> dict:
    from dataclasses import replace

    from KnowledgeSAMLib.infer import SegmentRequest
    from KnowledgeSAMLib.infer.interactive import slice_to_check, update_slab
    from KnowledgeSAMLib.infer.output import assemble_labels
    from KnowledgeSAMLib.infer.slicing import axis_view

    view = axis_view(image.shape, image.geometry, "axial")
    row: dict = {"case": name, "ksam": {}, "fill": {}, "annotator": {}, "update_s": []}
    first = None  # the one-slice run, where the simulated annotator also starts
    for n in COUNTS:
        picks = chosen_slices(truth, view, n)
        drawn = only_slices(truth, view, picks)
        started = time.perf_counter()
        request = SegmentRequest(image, image, drawn, mode="propagate", **request_kwargs)
        result = segmenter.segment(request)
        if n == 1:
            first = (sorted({k for ks in picks.values() for k in ks}), request, result)
        row["ksam"][n] = {"dice": dice_of(result.labels, truth), "seconds": time.perf_counter() - started,
                          "slices": picks}
        filled = fill_between(truth, drawn) if n >= 2 else None
        if filled is not None:
            row["fill"][n] = {"dice": dice_of(filled, truth)}
    # the simulated annotator: one slice per structure, then each round it corrects the slice "Next slice to check"
    # shows (the most likely-wrong voxels around it; a slice it labelled or corrected is then exact for every structure)
    labelled, request, result = first  # COUNTS starts at 1
    row["annotator"][1] = {"dice": dice_of(result.labels, truth), "slices": list(labelled)}
    for rounds in range(2, max(COUNTS) + 1):
        names = [s.name for s in truth.segments]
        found = slice_to_check({name: result.confidence[name] for name in names},
                               {name: view.slice_sizes(result.labels.mask(name)) for name in names},
                               {name: labelled for name in names})
        k = None if found is None else found[1]
        if k is None:  # nothing predicted outside the labelled slices: label the largest unlabelled truth slice
            sizes = [(int(view.get(truth.layers.max(axis=0), j).astype(bool).sum()), j) for j in range(view.n)
                     if j not in labelled]
            k = max(sizes)[1]
        labelled = sorted(labelled + [int(k)])
        masks = {seg.name: result.labels.mask(seg.name).copy() for seg in truth.segments}
        for seg in truth.segments:  # the annotator's slices, slice k now among them, are exact
            for j in labelled:
                view.put(masks[seg.name], j, np.ascontiguousarray(view.get(truth.mask(seg.name), j)))
        current = assemble_labels(masks, truth.segments, truth.geometry, truth.shape)
        started = time.perf_counter()
        result = update_slab(segmenter.segment, replace(request, reference_labels=current, reference_slices=labelled),
                             k, previous_confidence=result.confidence)
        row["update_s"].append(time.perf_counter() - started)
        if rounds in COUNTS:
            row["annotator"][rounds] = {"dice": dice_of(result.labels, truth), "slices": list(labelled)}
    print(f"{name}: " + "  ".join(
        f"n={n} ksam {np.mean(list(row['ksam'][n]['dice'].values())):.3f}"
        + (f" fill {np.mean(list(row['fill'][n]['dice'].values())):.3f}" if n in row['fill'] else "")
        + f" annot {np.mean(list(row['annotator'][n]['dice'].values())):.3f}" for n in COUNTS), flush=True)
    return row


def slices_drawn(row: dict, method: str, n: int) -> int:
    """How many distinct slices the annotator drew for one row and count: the effort, whatever the structures.
    (n per structure can be up to n x structures slices where the structures do not share slices; the simulated
    annotator's corrections are one slice each, exact for every structure on it.) Fill uses propagate's slices."""
    picks = row["ksam" if method == "fill" else method][n]["slices"]
    return len({int(k) for ks in picks.values() for k in ks} if isinstance(picks, dict) else set(picks))


def summarise(rows: list[dict]) -> dict:
    out = {}
    for method in ("ksam", "fill", "annotator"):
        out[method] = {}
        for n in COUNTS:
            values = [np.mean(list(r[method][n]["dice"].values())) for r in rows if n in r[method]]
            if values:
                drawn = [slices_drawn(r, method, n) for r in rows if n in r[method]]
                out[method][n] = {"mean": float(np.mean(values)), "sd": float(np.std(values)), "cases": len(values),
                                  "slices_drawn": float(np.mean(drawn))}
    updates = [s for r in rows for s in r["update_s"]]
    out["update_s"] = {"mean": float(np.mean(updates)), "max": float(np.max(updates))} if updates else {}
    out["ksam_seconds"] = {n: float(np.mean([r["ksam"][n]["seconds"] for r in rows])) for n in COUNTS}
    return out


def markdown(summary: dict, header: str) -> str:
    names = {"ksam": "KnowledgeSAM propagate (default model)",
             "fill": "Fill between slices (ITK morphological contour interpolation)",
             "annotator": "KnowledgeSAM, annotator corrects the \"next slice to check\" (most likely-wrong voxels around it)"}
    lines = [header, "", "| labelled slices per structure (annotator: start + corrections) | "
             + " | ".join(str(n) for n in COUNTS) + " |",
             "|---|" + "---|" * len(COUNTS)]
    for method, title in names.items():
        cells = [f"{summary[method][n]['mean']:.3f}" if n in summary[method] else "—" for n in COUNTS]
        lines.append(f"| {title} | " + " | ".join(cells) + " |")
    drawn = {method: " / ".join(f"{summary[method][n]['slices_drawn']:.1f}" for n in COUNTS if n in summary[method])
             for method in ("ksam", "annotator")}
    lines += ["", f"Slices drawn in all, mean per case at {' / '.join(str(n) for n in COUNTS)} (a drawn slice holds every "
                  f"structure on it; the effort to compare rows by): propagate and Fill {drawn['ksam']}, simulated "
                  f"annotator {drawn['annotator']}."]
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
    for method, label, style in (("ksam", "KnowledgeSAM propagate", "o-"), ("annotator", "… next slice to check",
                                                                              "s--"), ("fill", "Fill between slices",
                                                                                       "^-")):
        ns = [n for n in COUNTS if n in summary[method]]
        if ns:  # by the slices drawn in all: the rows' columns are not the same effort
            ax.plot([summary[method][n]["slices_drawn"] for n in ns], [summary[method][n]["mean"] for n in ns], style,
                    label=label)
    ax.set_xscale("log", base=2)
    ticks = (1, 2, 4, 8, 16)
    ax.set_xticks(ticks, [str(n) for n in ticks])
    ax.set_xlabel("slices drawn in all (mean per case)")
    ax.set_ylabel("mean Dice (held-out hippocampus)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path)


def ct_plumbing(segmenter, root: Path | None) -> tuple[str, dict]:
    """The same loop on the TotalSegmentator example CT (its model's labels: it shows the loop runs on a CT
    volume with several organs, not how accurate it is)."""
    from bench.real_ct_check import load
    from KnowledgeSAMLib.data.datasets import shared_data_root

    target, truth, _, _ = load(root or shared_data_root() / "totalsegmentator-example")
    row = run_case("example_ct", target, truth, segmenter, {"preset": "ct-abdomen"})
    summary = summarise([row])
    structures = ", ".join(s.name for s in truth.segments)
    text = markdown(summary, f"TotalSegmentator example CT ({structures}; labels from TotalSegmentator's model: "
                             f"plumbing, not an accuracy claim), same loop:")
    return text, {"summary": summary, "case": row}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--n", type=int, default=None, help="held-out hippocampus cases (default: all 10)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--markdown", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--ct", action="store_true", help="also the TotalSegmentator example CT (model labels: "
                                                          "plumbing only, never an accuracy claim)")
    parser.add_argument("--ct-data", type=Path, default=None, help="totalsegmentator-example folder")
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
              f"Regenerate: `python bench/interactive.py --threads 2 --ct --markdown docs/interactive.md --plot "
              f"docs/interactive.png --json docs/interactive.json`.")
    text = markdown(summary, header)
    ct = None
    if args.ct:
        ct_text, ct = ct_plumbing(segmenter, args.ct_data)
        text += "\n" + ct_text
    print(text)
    if args.markdown:
        args.markdown.write_text(text, encoding="utf-8")
    if args.plot:
        plot(summary, args.plot)
    if args.json:
        args.json.write_text(json.dumps({"summary": summary, "cases": rows, "ct": ct}, indent=1, default=float) + "\n",
                             encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
