"""Render the extension's screenshot (``docs/images/KnowledgeSAM-screenshot.png``, named by
``EXTENSION_SCREENSHOTURLS``) from a real run on the one-click sample.

What it shows: *Sample Data ▸ KnowledgeSAMKidneyPhantom* segmented with the panel's default settings (reference
= the target itself, all labelled slices, mode auto, ROI found automatically) and the embedded default model,
run through the same MRML path as the panel (``KnowledgeSAMLib.mrml`` on slicer-core, headless). It is a
rendering of that result in a Slicer-like layout (the slice with the user's drawing, filled slices, a
coronal reformat), not a capture of the Slicer window, which cannot run here. The caption gives the Dice
against the phantom's generator truth on the slices the user did not draw.

    python KnowledgeSAM/Scripts/make_screenshot.py [--model default] [--output docs/images/KnowledgeSAM-screenshot.png]
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))
SAMPLE = REPO / "KnowledgeSAM" / "Resources" / "SampleData"
PHANTOM_SEED, PHANTOM_SHAPE = 11, (32, 80, 80)  # make_sample_data.py's KidneyPhantom1


def run_sample(model):
    """The sample as the panel runs it by default; returns image, reference labels, result labels, seconds."""
    from KnowledgeSAMLib import mrml

    scene = mrml.headless_scene()
    volume = mrml.load_volume(scene, SAMPLE / "KidneyPhantom1.nrrd")
    reference = mrml.load_segmentation(scene, SAMPLE / "KidneyPhantom1-slice.seg.nrrd")
    started = time.perf_counter()
    output = mrml.segment_volume_nodes(volume, None, reference, [], mode="auto", device="cpu", model=model)
    seconds = time.perf_counter() - started
    return (mrml.image_from_volume_node(volume), mrml.labels_from_segmentation_node(reference, None, volume),
            mrml.labels_from_segmentation_node(output, None, volume), seconds)


def dice(a, b):
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else 2.0 * float((a & b).sum()) / float(total)


def overlay(grey, labels, index):
    """A CT-windowed slice ``index`` (numpy tuple index) with every segment blended in its colour."""
    window, level = 400.0, 40.0
    rgb = np.repeat(np.clip((grey[index].astype(float) - (level - window / 2)) / window, 0, 1)[..., None], 3, 2)
    for segment in labels.segments:
        mask = labels.mask(segment)[index]
        rgb[mask] = 0.45 * rgb[mask] + 0.55 * np.asarray(segment.color or (1.0, 0.0, 0.0))
    return rgb


def render(image, reference, result, scores, seconds, output):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    drawn = int(np.flatnonzero(reference.layers.astype(bool).any(axis=(0, 2, 3)))[0])
    shown = [drawn, max(drawn - 3, 0), min(drawn + 3, image.shape[0] - 1)]
    figure, axes = plt.subplots(1, 4, figsize=(13, 4.2), facecolor="#1e1e1e",
                                gridspec_kw={"width_ratios": [1, 1, 1, 1.1]})
    titles = [f"axial {drawn}: drawn by the user (the prompt)", f"axial {shown[1]}: filled", f"axial {shown[2]}: filled"]
    for axis, k, title in zip(axes[:3], shown, titles):
        axis.imshow(overlay(image.array, reference if k == drawn else result, (k,)), interpolation="nearest")
        axis.set_title(title, color="white", fontsize=10)
    row = int(np.argmax(result.layers.astype(bool).any(axis=0).sum(axis=(0, 2))))
    axes[3].imshow(overlay(image.array, result, (slice(None), row)), interpolation="nearest",
                   aspect=image.geometry.spacing[2] / image.geometry.spacing[0], origin="lower")
    axes[3].set_title("coronal reformat through the kidneys", color="white", fontsize=10)
    for axis in axes:
        axis.set_xticks([])
        axis.set_yticks([])
    names = ", ".join(f"{name} {value:.2f}" for name, value in scores.items())
    figure.suptitle("KnowledgeSAM in 3D Slicer: Sample Data > KnowledgeSAMKidneyPhantom, one labelled slice, "
                    "default settings", color="white", fontsize=12)
    figure.text(0.5, 0.03, f"Result of a real run (embedded default model, CPU, {seconds:.0f} s), rendered headless. "
                f"Dice on the {image.shape[0] - 1} slices not drawn: {names}. Segments are marked 'in progress'.",
                color="#cccccc", ha="center", fontsize=9)
    figure.tight_layout(rect=(0, 0.06, 1, 0.93))
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=110, facecolor=figure.get_facecolor())


def main(argv=None):
    from KnowledgeSAMLib.data.phantoms import make_kidney_phantom

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="default")
    parser.add_argument("--output", type=Path, default=REPO / "docs" / "images" / "KnowledgeSAM-screenshot.png")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    image, reference, result, seconds = run_sample(args.model)
    truth = make_kidney_phantom(PHANTOM_SEED, shape=PHANTOM_SHAPE)[1]
    drawn = reference.layers.astype(bool).any(axis=(0, 2, 3))
    scores = {}
    for segment in result.segments:
        found = result.mask(segment)[~drawn]
        scores[segment.name] = dice(found, truth.mask(truth.find(segment.name))[~drawn])
    render(image, reference, result, scores, seconds, args.output)
    print(f"{args.output}: {seconds:.1f} s, Dice " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
