"""Atlas-registration baseline: register a labelled reference onto the target, carry its labels over.

Why this baseline: it is the classic "reference image + its mask says what to segment" method, with
no learning at all. KnowledgeSAM must beat it to be worth its weights. Method (SimpleITK):

1. Centre the two images on each other (geometric centres: cross-patient origins mean nothing).
2. Affine registration, Mattes mutual information, multi-resolution, regular-step gradient descent.
   The metric is evaluated only near the reference's labelled structures (dilated by ``focus_mm``):
   the atlas knows where its structure is, and the rest of the crop should not steer the alignment.
3. B-spline deformable registration on top of the affine (same metric, coarse-to-fine control grid,
   gradient descent with line search).
4. Warp every label layer of the reference with the composite transform, nearest neighbour.

Run over the hippocampus held-out pairs (target = held-out case k, reference = training case k)::

    python bench/atlas_registration.py [--data DIR] [--json OUT.json] [--limit N]
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import SimpleITK as sitk

if __package__ in (None, ""):  # run as a script: make ``bench`` and the library importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import hippocampus_available, machine, score_case, summarise, to_sitk, write_json  # noqa: E402
from KnowledgeSAMLib.data.volume import Image, Labels  # noqa: E402
from KnowledgeSAMLib.errors import CancelledError, InputError  # noqa: E402


STAGES = ("center", "affine", "affine+bspline")


@dataclass(frozen=True)
class AtlasConfig:
    """Registration settings. Tuned on 8 training-only pairs (never on the held-out targets): the focus
    region (+0.04 mean Dice for the affine stage) and an 8 mm rather than 12 mm control grid (+0.01)."""

    metric: str = "mattes"  # "mattes" (mutual information) or "correlation" (same-modality scans)
    histogram_bins: int = 32
    focus_mm: float | None = 5.0  # metric only near the reference labels (dilated by this); None: whole image
    sampling_percentage: float = 0.5  # of voxels per metric evaluation (the crops are small)
    # Bounds for whole fields of view, which the tuning crops never reached (they bind on none of the kidney ROI
    # crops, 72 x 72 x 120 mm, nor the hippocampus volumes): a 40 x 224 x 224 whole-abdomen phantom at 8 mm needed
    # 42 x 42 x 15 control points and a million metric samples, and one B-spline registration ran for over 25 min
    # in 16 GB on 2 cores; at 512 x 512 it would not fit in memory.
    max_samples: int = 200_000  # metric samples per evaluation at most
    bspline_max_points: int = 16  # control points per axis at the finest level at most (a wider grid then)
    affine_iterations: int = 200
    affine_shrink: tuple[int, ...] = (2, 1)
    affine_smoothing_mm: tuple[float, ...] = (1.0, 0.0)
    affine_learning_rate: float = 1.0
    bspline_mesh_mm: float = 8.0  # control-point spacing at the finest level; doubled per coarser level
    bspline_iterations: int = 100
    bspline_learning_rate: float = 5.0
    bspline_shrink: tuple[int, ...] = (2, 1)
    bspline_smoothing_mm: tuple[float, ...] = (1.0, 0.0)
    stages: str = "affine+bspline"  # or "affine", or "center" (centred images only: the no-registration row)
    threads: int = 2
    seed: int = 7


def _image(image: Image) -> sitk.Image:
    if image.is_rgb:
        raise InputError(f"{image.source or 'image'}: atlas registration needs a scalar (grey) image")
    array = image.array.astype(np.float32)
    low, high = np.percentile(array, (0.5, 99.5))
    scaled = np.clip((array - low) / max(float(high - low), 1e-6), 0.0, 1.0)  # comparable ranges across scans
    return to_sitk(scaled, image.geometry)


def registration_method(metric: str, histogram_bins: int, threads: int, sampling_percentage: float, seed: int,
                        shrink: tuple[int, ...], smoothing: tuple[float, ...], focus: sitk.Image | None,
                        smoothing_in_mm: bool) -> sitk.ImageRegistrationMethod:
    """A multi-resolution SimpleITK registration with the metric evaluated only where ``focus`` is set
    (shared by the 3D atlas here and the 2D fundus atlas in ``bench/baselines/atlas2d.py``)."""
    method = sitk.ImageRegistrationMethod()
    method.SetNumberOfThreads(threads)
    if metric == "mattes":
        method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=histogram_bins)
    elif metric == "correlation":
        method.SetMetricAsCorrelation()
    else:
        raise ValueError(f"unknown metric {metric!r}")
    if focus is not None:
        method.SetMetricMovingMask(focus)
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(sampling_percentage, seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetShrinkFactorsPerLevel(list(shrink))
    method.SetSmoothingSigmasPerLevel(list(smoothing))
    if smoothing_in_mm:
        method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    return method


def sampling_fraction(config: AtlasConfig, voxels: int) -> float:
    """The share of the fixed image's voxels the metric samples: ``config.sampling_percentage``, lowered so that
    no more than ``config.max_samples`` are drawn."""
    return min(config.sampling_percentage, config.max_samples / max(int(voxels), 1))


def control_points(config: AtlasConfig, extent_mm) -> list[int]:
    """B-spline control points per axis at the finest level: one every ``bspline_mesh_mm``, at most
    ``bspline_max_points``."""
    return [min(max(int(round(e / config.bspline_mesh_mm)), 1), config.bspline_max_points) for e in extent_mm]


def _registration(config: AtlasConfig, shrink: tuple[int, ...], smoothing: tuple[float, ...],
                  focus: sitk.Image | None, fixed: sitk.Image) -> sitk.ImageRegistrationMethod:
    return registration_method(config.metric, config.histogram_bins, config.threads,
                               sampling_fraction(config, fixed.GetNumberOfPixels()), config.seed, shrink, smoothing,
                               focus, smoothing_in_mm=True)


def _focus(reference_labels: Labels, config: AtlasConfig) -> sitk.Image | None:
    """The region of the reference the metric looks at: its labelled structures plus a margin."""
    if config.focus_mm is None:
        return None
    mask = to_sitk((reference_labels.layers != 0).any(axis=0), reference_labels.geometry, np.uint8)
    radius = [max(int(round(config.focus_mm / s)), 1) for s in mask.GetSpacing()]
    return sitk.BinaryDilate(mask, radius, sitk.sitkBall)


def _centred(fixed: sitk.Image, moving: sitk.Image) -> sitk.Transform:
    """Affine transform that only lines up the geometric centres of the two grids."""
    return sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                             sitk.CenteredTransformInitializerFilter.GEOMETRY)


def _affine(fixed: sitk.Image, moving: sitk.Image, focus: sitk.Image | None, config: AtlasConfig,
            check: Callable[[], None]) -> sitk.Transform:
    initial = _centred(fixed, moving)
    method = _registration(config, config.affine_shrink, config.affine_smoothing_mm, focus, fixed)
    method.SetOptimizerAsRegularStepGradientDescent(learningRate=config.affine_learning_rate, minStep=1e-4,
                                                    numberOfIterations=config.affine_iterations,
                                                    relaxationFactor=0.6, gradientMagnitudeTolerance=1e-6)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetInitialTransform(initial, inPlace=False)
    method.AddCommand(sitk.sitkIterationEvent, check)
    return method.Execute(fixed, moving)


def _bspline(fixed: sitk.Image, moving: sitk.Image, focus: sitk.Image | None, affine: sitk.Transform,
             config: AtlasConfig, check: Callable[[], None]) -> sitk.Transform:
    extent = [size * spacing for size, spacing in zip(fixed.GetSize(), fixed.GetSpacing())]
    levels = len(config.bspline_shrink)
    finest = control_points(config, extent)
    coarse = [max(m // 2 ** (levels - 1), 1) for m in finest]
    initial = sitk.BSplineTransformInitializer(fixed, coarse, order=3)
    method = _registration(config, config.bspline_shrink, config.bspline_smoothing_mm, focus, fixed)
    method.SetOptimizerAsGradientDescentLineSearch(learningRate=config.bspline_learning_rate,
                                                   numberOfIterations=config.bspline_iterations,
                                                   convergenceMinimumValue=1e-5, convergenceWindowSize=5)
    method.SetOptimizerScalesFromPhysicalShift()  # re-estimated per level as the control grid refines
    method.SetMovingInitialTransform(affine)
    method.SetInitialTransformAsBSpline(initial, inPlace=True, scaleFactors=[2 ** i for i in range(levels)])
    method.AddCommand(sitk.sitkIterationEvent, check)
    deformation = method.Execute(fixed, moving)
    return sitk.CompositeTransform([affine, deformation])


def register(target: Image, reference: Image, reference_labels: Labels | None = None,
             config: AtlasConfig = AtlasConfig(), cancel=None) -> sitk.Transform:
    """Transform mapping target (fixed) physical points to reference (moving) points."""
    def check() -> None:
        if cancel is not None and getattr(cancel, "cancelled", False):
            raise CancelledError("atlas registration cancelled")

    if config.stages not in STAGES:
        raise ValueError(f"unknown registration stages {config.stages!r}; expected one of {STAGES}")
    fixed, moving = _image(target), _image(reference)
    if config.stages == "center":
        return _centred(fixed, moving)
    focus = _focus(reference_labels, config) if reference_labels is not None else None
    try:
        affine = _affine(fixed, moving, focus, config, check)
        if config.stages == "affine":
            return affine
        return _bspline(fixed, moving, focus, affine, config, check)
    except RuntimeError as error:  # SimpleITK raises RuntimeError for exceptions thrown in commands too
        if cancel is not None and getattr(cancel, "cancelled", False):
            raise CancelledError("atlas registration cancelled") from error
        raise


def warp_labels(reference_labels: Labels, transform: sitk.Transform, target: Image) -> Labels:
    """Every layer of the reference labels resampled onto the target grid (nearest neighbour)."""
    fixed = to_sitk(np.zeros(target.shape, np.uint8), target.geometry, np.uint8)
    layers = []
    for layer in reference_labels.layers:
        moving = to_sitk(layer, reference_labels.geometry, np.int32)
        warped = sitk.Resample(moving, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkInt32)
        layers.append(sitk.GetArrayFromImage(warped))
    return Labels(layers=np.stack(layers).astype(reference_labels.layers.dtype), geometry=target.geometry,
                  segments=[s for s in reference_labels.segments], source="atlas registration")


def atlas_segment(target: Image, reference: Image, reference_labels: Labels,
                  config: AtlasConfig = AtlasConfig(), cancel=None) -> Labels:
    """Segment ``target`` by registering ``reference`` onto it and warping ``reference_labels``."""
    for image in (target, reference):
        if image.geometry.ndim != 3 or image.shape[0] < 4:
            raise InputError(f"{image.source or 'image'}: atlas registration needs 3D volumes (got {image.shape})")
    if reference_labels.shape != reference.shape:
        raise InputError(f"{reference_labels.source or 'reference labels'}: grid {reference_labels.shape} "
                         f"differs from the reference image grid {reference.shape}")
    transform = register(target, reference, reference_labels, config, cancel)
    return warp_labels(reference_labels, transform, target)


def run_pairs(root: Path | None, config: AtlasConfig = AtlasConfig(), limit: int | None = None,
              progress: Callable[[int, int], None] | None = None) -> dict:
    """Atlas baseline over the hippocampus held-out pairs: Dice per structure and seconds per case."""
    from KnowledgeSAMLib.data.datasets import hippocampus_cases, hippocampus_eval_pairs, load_hippocampus

    pairs = hippocampus_eval_pairs(hippocampus_cases(root))
    if limit:
        pairs = pairs[:limit]
    cases = []
    for index, (target_id, reference_id) in enumerate(pairs):
        target, truth = load_hippocampus(root, target_id)
        reference, reference_labels = load_hippocampus(root, reference_id)
        start = time.perf_counter()
        prediction = atlas_segment(target, reference, reference_labels, config)
        seconds = time.perf_counter() - start
        cases.append({"target": str(target_id), "reference": str(reference_id), "seconds": seconds,
                      **score_case(prediction, truth)})
        if progress:
            progress(index + 1, len(pairs))
    return {"method": f"atlas registration ({config.stages}, SimpleITK)", "config": asdict(config),
            "summary": summarise(cases), "cases": cases, "machine": machine()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, help="msd-hippocampus folder, or the shared data folder holding it "
                                                      "(default: $KNOWLEDGESAM_SHARED_DATA, else ../shared/data)")
    parser.add_argument("--json", type=Path, help="write the results here (JSON)")
    parser.add_argument("--limit", type=int, help="only the first N pairs")
    parser.add_argument("--stages", choices=STAGES, default=AtlasConfig.stages,
                        help="registration stages (center = no registration, for comparison)")
    parser.add_argument("--threads", type=int, default=AtlasConfig.threads)
    args = parser.parse_args(argv)
    if not hippocampus_available(args.data):
        print(f"atlas_registration: error: {args.data or 'shared data folder'}: hippocampus data not found",
              file=sys.stderr)
        return 2
    from tqdm import tqdm

    config = AtlasConfig(stages=args.stages, threads=args.threads)
    with tqdm(desc="atlas pairs", unit="case", file=sys.stderr) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        results = run_pairs(args.data, config, args.limit, progress)
    for case in results["cases"]:
        print(f"{case['target']} <- {case['reference']}: head {case['dice']['head']:.3f}  "
              f"body {case['dice']['body']:.3f}  mean {case['mean_dice']:.3f}  {case['seconds']:.1f} s")
    summary = results["summary"]
    print(f"mean over {summary['cases']} cases: head {summary['dice']['head']:.3f}  body {summary['dice']['body']:.3f}"
          f"  mean {summary['mean_dice']:.3f}  {summary['seconds_per_case']:.1f} s/case")
    if args.json:
        write_json(results, args.json)
    return 0


if __name__ == "__main__":
    sys.exit(main())
