"""``knowledgesam demo``: the main job end to end on phantoms, in one command.

It makes a labelled reference phantom and a target phantom (another "patient": kidney-centred CT crops,
as kidney-parsing data comes), segments the target
with the embedded default model in ``volume`` mode (the reference is another image), writes the result
as a Slicer ``.seg.nrrd`` with its provenance, a PNG montage (target, reference, prediction and truth
overlays), and prints the Dice per structure. The inputs are written too, with the equivalent
``knowledgesam segment`` command, so the user can rerun or open everything in Slicer.
"""

from __future__ import annotations

import argparse
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

import numpy as np

from .. import choices
from ..errors import InputError, WeightsError

FILES = {
    "reference": "reference.nrrd", "reference_labels": "reference.seg.nrrd", "target": "target.nrrd",
    "truth": "target_truth.seg.nrrd", "prediction": "prediction.seg.nrrd", "montage": "montage.png",
}
# Held-out phantoms (training uses seeds < 5000): the demo never shows the model a case it was trained on.
REFERENCE_SEED, TARGET_SEED = 5001, 5002


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser("demo", help="segment a phantom with the default model; writes files and a montage")
    parser.add_argument("--output", default="knowledgesam-demo", metavar="DIR",
                        help="folder for the demo files (default ./knowledgesam-demo)")
    parser.add_argument("--model", default=choices.DEFAULT_MODEL, help="model to use (default: the embedded default model)")
    parser.add_argument("--device", default=choices.DEFAULT_DEVICE, choices=choices.DEVICES)
    parser.add_argument("--batch-size", type=int, default=choices.DEFAULT_BATCH_SIZE, metavar="N")
    parser.add_argument("--shape", metavar="Z,Y,X",
                        help="phantom crop size; Y and X give the square in-plane size (default 40,96,96)")
    parser.add_argument("--overwrite", action="store_true", help="replace files of an earlier demo")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    parser.set_defaults(func=run)


def _segmenter(name: str):
    """A Segmenter with the requested model; when the embedded default is not there yet, a random tiny
    model, said loudly."""
    from ..infer.segmenter import Segmenter

    segmenter = Segmenter(name)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            segmenter.load_model()
            note = None
        except WeightsError as error:
            if name != choices.DEFAULT_MODEL:
                raise
            from ..model.build import build_model

            segmenter.use_model(build_model("tiny"))
            note = (f"{error}\nknowledgesam: warning: using a randomly initialised 'tiny' model instead; "
                    "its Dice is near chance and means nothing about KnowledgeSAM")
    for warning in caught:
        print(f"knowledgesam: warning: {warning.message}", file=sys.stderr)
    if note:
        print(f"knowledgesam: warning: {note}", file=sys.stderr)
    return segmenter


def _shape(text: str | None) -> tuple[int, int, int] | None:
    if not text:
        return None
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 3 or min(values) < 4:
        raise InputError(f"--shape must be three sizes Z,Y,X of at least 4, got {text!r}")
    return values  # type: ignore[return-value]


def _phantom(seed: int, shape):
    """A kidney ROI phantom; ``shape`` rescales the 72 mm in-plane window to Y×Y pixels (cheaper to render)."""
    from ..data.phantoms import make_kidney_roi_phantom
    from ..data.phantoms.kidney_roi import KidneyROIConfig

    if shape is None:
        return make_kidney_roi_phantom(seed)
    base = KidneyROIConfig()
    z, side = shape[0], min(shape[1:])
    factor = side / base.crop_xy
    render = max(side, round(base.render_shape[1] * factor))
    config = KidneyROIConfig(render_shape=(z, render, render), crop_xy=side,
                             render_spacing=(base.render_spacing[0] / factor, base.render_spacing[1] / factor,
                                             base.render_spacing[2]),
                             jitter_px=max(1, round(base.jitter_px * factor)))
    return make_kidney_roi_phantom(seed, config=config)


# ---------------------------------------------------------------------------------------- montage

def _panel(grey: np.ndarray, masks: Sequence[np.ndarray], colours: Sequence[Sequence[float]], title: str,
           size: tuple[int, int]):
    """One captioned tile: a grey slice with filled, outlined masks (PIL image)."""
    from PIL import Image as PILImage, ImageDraw

    rgb = np.repeat((np.clip(grey, 0, 1) * 255).astype(np.uint8)[..., None], 3, axis=-1)
    tile = PILImage.fromarray(rgb).resize(size, PILImage.BILINEAR)
    canvas = np.asarray(tile).astype(np.float32)
    for mask, colour in zip(masks, colours):
        big = np.asarray(PILImage.fromarray(mask.astype(np.uint8) * 255).resize(size, PILImage.NEAREST)) > 0
        if not big.any():
            continue
        edge = big & ~(np.roll(big, 1, 0) & np.roll(big, -1, 0) & np.roll(big, 1, 1) & np.roll(big, -1, 1))
        colour_255 = np.asarray(colour, dtype=np.float32) * 255
        canvas[big] = 0.6 * canvas[big] + 0.4 * colour_255
        canvas[edge] = colour_255
    picture = PILImage.new("RGB", (size[0], size[1] + 18), (20, 20, 20))
    picture.paste(PILImage.fromarray(canvas.astype(np.uint8)), (0, 18))
    ImageDraw.Draw(picture).text((4, 3), title, fill=(235, 235, 235))
    return picture


def montage(target, reference, reference_labels, prediction, truth, segments, tile: int = 256):
    """Target | reference + its labels | target + prediction | target + truth, on the slice where the
    truth is largest (and the reference slice where its labels are largest)."""
    from PIL import Image as PILImage

    from ..data.intensity import get_preset
    from ..data.io import DEFAULT_COLORS
    from ..infer.slicing import axis_view

    colours = [s.color or DEFAULT_COLORS[i % len(DEFAULT_COLORS)] for i, s in enumerate(segments)]

    def best_slice(image, labels):
        view = axis_view(image.shape, image.geometry, "axial")
        area = sum(np.asarray(labels.mask(s.name).sum(axis=tuple(a for a in range(3) if a != view.slice_axis)))
                   for s in segments)
        return view, int(np.argmax(area))

    def grey(image, view, k):
        mapped = get_preset("auto").fit(image).apply(np.ascontiguousarray(view.get(image.array, k)))
        return mapped.mean(axis=-1)

    def plane_masks(labels, view, k):
        return [np.ascontiguousarray(view.get(labels.mask(s.name), k)) for s in segments]

    t_view, k = best_slice(target, truth)
    r_view, r = best_slice(reference, reference_labels)
    h, w = t_view.slice_shape
    sy, sx = t_view.spacing_hw
    scale = tile / max(h * sy, w * sx)
    size = (max(1, round(w * sx * scale)), max(1, round(h * sy * scale)))
    rh, rw = r_view.slice_shape
    rsy, rsx = r_view.spacing_hw
    rscale = tile / max(rh * rsy, rw * rsx)
    rsize = (max(1, round(rw * rsx * rscale)), max(1, round(rh * rsy * rscale)))
    target_grey = grey(target, t_view, k)
    panels = [
        _panel(target_grey, [], [], f"target (slice {k})", size),
        _panel(grey(reference, r_view, r), plane_masks(reference_labels, r_view, r), colours,
               f"reference (slice {r})", rsize),
        _panel(target_grey, plane_masks(prediction, t_view, k), colours, "prediction", size),
        _panel(target_grey, plane_masks(truth, t_view, k), colours, "truth", size),
    ]
    width = sum(p.width for p in panels) + 6 * (len(panels) + 1)
    height = max(p.height for p in panels) + 12
    sheet = PILImage.new("RGB", (width, height), (40, 40, 40))
    x = 6
    for panel in panels:
        sheet.paste(panel, (x, 6))
        x += panel.width + 6
    return sheet


# ------------------------------------------------------------------------------------------- run

def run(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from ..data.io import write_image, write_labels
    from ..evaluation.metrics import dice
    from ..evaluation.overlay import save_overlay
    from ..infer import SegmentRequest
    from ..infer.output import sidecar_path, write_result
    from ..infer.provenance import Sources

    out = Path(args.output).expanduser()
    paths = {key: out / name for key, name in FILES.items()}
    shape = _shape(args.shape)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder")
    if not args.overwrite:
        for path in list(paths.values()) + [sidecar_path(paths["prediction"])]:
            if path.exists():
                raise InputError(f"{path}: file exists; not overwriting it (use --overwrite)")

    started = time.perf_counter()
    reference, reference_labels = _phantom(REFERENCE_SEED, shape)
    target, truth = _phantom(TARGET_SEED, shape)
    segmenter = _segmenter(args.model)
    request = SegmentRequest(target=target, reference=reference, reference_labels=reference_labels,
                             segments=list(reference_labels.segments), mode="auto", device=args.device,
                             batch_size=args.batch_size)
    bar = tqdm(total=1, desc="demo", unit="step", disable=args.quiet, dynamic_ncols=True)

    def progress(done: int, total: int) -> None:
        bar.total = total
        bar.n = done
        bar.refresh()

    sources = Sources(target=str(paths["target"]), reference=str(paths["reference"]),
                      reference_labels=str(paths["reference_labels"]), model=args.model)
    try:
        result = segmenter.segment(request, progress=progress, sources=sources)
    finally:
        bar.close()

    out.mkdir(parents=True, exist_ok=True)
    write_image(reference, paths["reference"], overwrite=args.overwrite)
    write_labels(reference_labels, paths["reference_labels"], overwrite=args.overwrite)
    write_image(target, paths["target"], overwrite=args.overwrite)
    write_labels(truth, paths["truth"], overwrite=args.overwrite)
    write_result(result, paths["prediction"], overwrite=args.overwrite)
    picture = montage(target, reference, reference_labels, result.labels, truth, list(reference_labels.segments))
    save_overlay(picture, paths["montage"], overwrite=args.overwrite)

    print(f"model: {result.provenance['model']['name']} (sha256 {result.provenance['model']['sha256'][:12]}), "
          f"mode {result.provenance['mode']}, device {result.provenance['device']}, "
          f"{time.perf_counter() - started:.1f} s")
    print(f"{'structure':<12}{'Dice':>8}")
    scores = []
    for seg in reference_labels.segments:
        score = dice(result.labels.mask(seg.name), truth.mask(seg.name))
        scores.append(score)
        print(f"{seg.name:<12}{score:>8.3f}")
    print(f"{'mean':<12}{float(np.mean(scores)):>8.3f}")
    print(f"wrote {paths['prediction']}, {paths['montage']} and the inputs in {out}")
    print("same run by hand: knowledgesam segment "
          f"--target {paths['target']} --reference {paths['reference']} "
          f"--reference-labels {paths['reference_labels']} --output {paths['prediction']} --overwrite")
    return 0
