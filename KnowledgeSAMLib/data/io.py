"""Reading and writing images and label sets, with their geometry, in the formats users bring.

Why one module: every front-end (CLI, Slicer bridge, trainer, evaluation) must see the same
``(z, y, x)`` arrays and the same LPS geometry for a file, and must never leave a half-written file
behind. Formats:

* images: NIfTI, NRRD, MHA/MHD (SimpleITK), a DICOM series folder (largest series in the folder),
  PNG/JPG/BMP for 2D (PIL; RGB kept as ``(1, y, x, 3)``, grayscale as ``(1, y, x)``);
* labels: the same image formats as plain labelmaps (one layer; segments named ``Label <v>``), and
  Slicer's ``.seg.nrrd`` through slicerio (layers for overlapping segments, names, label values,
  colours and terminology kept). slicerio arrays are ``(i, j, k)`` = ``(x, y, z)`` in LPS; ours are
  ``(z, y, x)``, so the axes are reversed and the ``ijkToLPS`` matrix is exactly
  :meth:`Geometry.index_to_physical`.

Writers pick the format from the extension, write to a temporary file in the destination folder
and ``os.replace`` it into place, so an error or Ctrl+C never leaves a partial file, and they never
overwrite an existing file unless asked.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from ..errors import InputError
from .commit import staged_files
from .header import HEADER_BYTES, check_image_file, check_nifti_complete as _check_nifti_complete, file_extension
from .header import locale_preserved as _locale_preserved, one_line as _one_line
from .limits import ImageSizeLimit
from .volume import Geometry, Image, Labels, Segment

__all__ = [
    "read_image",
    "read_labels",
    "write_image",
    "write_labels",
    "atomic_write",
    "labels_writer",
    "resample_labels_to",
    "file_extension",
    "DEFAULT_COLORS",
]

PathLike = str | os.PathLike

_PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
_SITK_WRITE_EXTENSIONS = (".nii", ".nii.gz", ".nrrd", ".mha")
_NDIM_FIELD = "KnowledgeSAM_ndim"  # custom .seg.nrrd field: 2 for label sets of 2D images

# Distinct, readable colours for segments that come without one (RGB in [0, 1]).
DEFAULT_COLORS: tuple[tuple[float, float, float], ...] = (
    (0.894, 0.102, 0.110), (0.216, 0.494, 0.722), (0.302, 0.686, 0.290), (0.596, 0.306, 0.639),
    (1.000, 0.498, 0.000), (1.000, 1.000, 0.200), (0.651, 0.337, 0.157), (0.969, 0.506, 0.749),
)


@dataclass(frozen=True)
class _Formats:
    """Which extensions each reader/writer handles (kept together so error messages list them)."""

    image_write: tuple[str, ...] = _SITK_WRITE_EXTENSIONS + (".png", ".jpg", ".jpeg")
    labels_write: tuple[str, ...] = (".seg.nrrd",) + _SITK_WRITE_EXTENSIONS + (".png",)


FORMATS = _Formats()


# --------------------------------------------------------------------------------------- writing

@contextlib.contextmanager
def atomic_write(path: PathLike, overwrite: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside ``path`` (same extension, so writers pick the right format);
    on success it is renamed onto ``path``, on any error (or KeyboardInterrupt) it is deleted.

    An existing ``path`` without ``overwrite`` is an :class:`InputError` and is never touched. Several files
    that belong together are written as one unit with :func:`~.commit.staged_files`.
    """
    with staged_files([path], overwrite) as (temporary,):
        yield temporary


def write_image(image: Image, path: PathLike, overwrite: bool = False) -> Path:
    """Write an image by extension: ``.nii[.gz]``, ``.nrrd``, ``.mha`` (geometry kept) or ``.png``/``.jpg``
    (2D only, 8-bit). Returns the path written."""
    path = Path(path)
    ext = file_extension(path)
    if ext in _SITK_WRITE_EXTENSIONS:
        sitk_image = _to_sitk(image.array, image.geometry, vector=image.is_rgb)
        writer = _sitk_writer(sitk_image)
    elif ext in (".png", ".jpg", ".jpeg"):
        writer = _pil_writer(_image_2d_uint8(image, path), path)
    else:
        raise InputError(f"{path}: cannot write images as '{ext or path.name}' "
                         f"(use one of {', '.join(FORMATS.image_write)})")
    with atomic_write(path, overwrite) as temporary:
        writer(temporary)
    return path


def write_labels(labels: Labels, path: PathLike, overwrite: bool = False) -> Path:
    """Write a label set by extension: ``.seg.nrrd`` (all layers and segment metadata), a plain labelmap
    ``.nii[.gz]``/``.nrrd``/``.mha`` (one layer: overlapping segments are an error), or ``.png`` (2D)."""
    path = Path(path)
    writer = labels_writer(labels, path)
    with atomic_write(path, overwrite) as temporary:
        writer(temporary)
    return path


def labels_writer(labels: Labels, path: PathLike) -> Callable[[Path], None]:
    """The function that writes ``labels`` in the format ``path``'s extension asks for, to any file name
    (checked now: a label set the format cannot hold is refused before anything is written)."""
    path = Path(path)
    ext = file_extension(path)
    if ext == ".seg.nrrd":
        writer = _seg_nrrd_writer(labels)
    elif ext in _SITK_WRITE_EXTENSIONS:
        labelmap = _single_labelmap(labels, path)
        writer = _sitk_writer(_to_sitk(labelmap, labels.geometry, vector=False))
    elif ext == ".png":
        labelmap = _single_labelmap(labels, path)
        if labelmap.shape[0] != 1:
            raise InputError(f"{path}: PNG holds one 2D slice; these labels have {labelmap.shape[0]} slices")
        if labelmap.max(initial=0) > 65535:
            raise InputError(f"{path}: label values above 65535 do not fit a PNG")
        dtype = np.uint8 if labelmap.max(initial=0) <= 255 else np.uint16
        writer = _pil_writer(labelmap[0].astype(dtype), path)
    else:
        raise InputError(f"{path}: cannot write labels as '{ext or path.name}' "
                         f"(use one of {', '.join(FORMATS.labels_write)})")
    return writer


def _sitk_writer(sitk_image) -> Callable[[Path], None]:
    import SimpleITK as sitk

    def write(temporary: Path) -> None:
        sitk.WriteImage(sitk_image, str(temporary), useCompression=True)

    return write


def _pil_writer(array: np.ndarray, path: Path) -> Callable[[Path], None]:
    from PIL import Image as PILImage

    fmt = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG"}[file_extension(path)]

    def write(temporary: Path) -> None:
        options = {"quality": 95} if fmt == "JPEG" else {}
        PILImage.fromarray(array).save(temporary, format=fmt, **options)

    return write


def _image_2d_uint8(image: Image, path: Path) -> np.ndarray:
    array = image.array
    if array.shape[0] != 1:
        raise InputError(f"{path}: PNG/JPG holds one 2D slice; this image has {array.shape[0]} slices")
    array = array[0]
    if array.dtype != np.uint8:
        if not np.issubdtype(array.dtype, np.number) or array.min() < 0 or array.max() > 255 \
                or not np.all(np.equal(np.round(array), array)):
            raise InputError(f"{path}: PNG/JPG hold 8-bit values 0..255; this image is {array.dtype} "
                             f"in [{array.min()}, {array.max()}] (write .nrrd/.nii.gz instead)")
        array = array.astype(np.uint8)
    return np.ascontiguousarray(array)


def _single_labelmap(labels: Labels, path: Path) -> np.ndarray:
    """Collapse the layers into one labelmap; overlapping segments cannot be collapsed without loss."""
    layers = labels.layers
    if layers.shape[0] == 1:
        return _label_dtype(layers[0])
    occupied = layers != 0
    overlap = occupied.sum(axis=0) > 1
    if overlap.any():
        where = tuple(int(i[0]) for i in np.nonzero(overlap))
        names = [s.name for s in labels.segments if layers[(s.layer,) + where] == s.label_value]
        pair = " and ".join(f"'{n}'" for n in names[:2]) if len(names) >= 2 else "two segments"
        raise InputError(f"{path}: segments {pair} overlap; {file_extension(path)} holds a single labelmap "
                         "(save as .seg.nrrd to keep overlapping segments on separate layers)")
    by_value: dict[int, Segment] = {}
    for seg in labels.segments:
        other = by_value.setdefault(seg.label_value, seg)
        if other is not seg and other.layer != seg.layer:
            raise InputError(f"{path}: segments '{other.name}' and '{seg.name}' share label value "
                             f"{seg.label_value} on different layers; save as .seg.nrrd")
    return _label_dtype(layers.sum(axis=0))


def _label_dtype(labelmap: np.ndarray) -> np.ndarray:
    """Smallest integer type holding the labels (uint8 for the usual few labels)."""
    top = int(labelmap.max(initial=0))
    low = int(labelmap.min(initial=0))
    if low >= 0 and top <= 255:
        return labelmap.astype(np.uint8, copy=False)
    if low >= 0 and top <= 65535:
        return labelmap.astype(np.uint16, copy=False)
    return labelmap.astype(np.int32, copy=False)


def _seg_nrrd_writer(labels: Labels) -> Callable[[Path], None]:
    import slicerio

    layers = _label_dtype(labels.layers)
    if layers.shape[0] == 0:  # no segments at all: still a valid (empty) segmentation
        layers = np.zeros((1,) + labels.shape, np.uint8)
    # (L, z, y, x) -> slicerio's (L, i, j, k) = (L, x, y, z); a single layer is stored as 3D.
    voxels = layers[0].transpose(2, 1, 0) if layers.shape[0] == 1 else layers.transpose(0, 3, 2, 1)
    used_ids: set[str] = set()
    segments = []
    for index, seg in enumerate(labels.segments):
        if seg.layer >= layers.shape[0]:
            raise InputError(f"{labels.source or 'labels'}: segment '{seg.name}' is on layer {seg.layer} "
                             f"but there are only {layers.shape[0]} layers")
        seg_id = seg.id or seg.name
        base, n = seg_id, 2
        while seg_id in used_ids:
            seg_id, n = f"{base}_{n}", n + 1
        used_ids.add(seg_id)
        color = seg.color if seg.color is not None else DEFAULT_COLORS[index % len(DEFAULT_COLORS)]
        entry = {"id": seg_id, "name": seg.name, "labelValue": int(seg.label_value), "layer": int(seg.layer),
                 "color": [float(c) for c in color], "colorAutoGenerated": seg.color is None,
                 "nameAutoGenerated": False}
        if seg.terminology:
            entry["tags"] = {"TerminologyEntry": seg.terminology}  # verbatim, exactly as Slicer stores it
        segments.append(entry)
    segmentation = {
        "voxels": voxels,
        "ijkToLPS": labels.geometry.index_to_physical(),
        "segments": segments,
        "containedRepresentationNames": ["Binary labelmap"],
        "masterRepresentation": "Binary labelmap",
    }
    if labels.geometry.ndim == 2:
        segmentation[_NDIM_FIELD] = "2"

    def write(temporary: Path) -> None:
        slicerio.write_segmentation(str(temporary), segmentation, compression_level=6)

    return write


# --------------------------------------------------------------------------------------- reading

def _check_exists(path: Path, what: str) -> None:
    if not path.exists():
        raise InputError(f"{path}: {what} not found")


def read_image(path: PathLike, limit: ImageSizeLimit | None = None) -> Image:
    """Read an image file or a DICOM series folder into an :class:`Image` with its geometry.

    The header is read first: an image beyond ``limit`` (default :meth:`ImageSizeLimit.default`, from the
    free memory) or with missing voxel data is refused before anything is allocated."""
    path = Path(path)
    _check_exists(path, "image file")
    if file_extension(path) != ".seg.nrrd":
        check_image_file(path, limit, "image")
    ext = file_extension(path)
    if path.is_dir():
        return _read_dicom_series(path)
    if ext == ".seg.nrrd":
        raise InputError(f"{path}: is a Slicer segmentation, not an image (read it with read_labels)")
    if ext in _PIL_EXTENSIONS:
        array = _read_pil(path)
        if array.ndim == 3 and array.shape[-1] == 2:  # grey + alpha
            array = array[..., 0]
        if array.ndim == 3 and array.shape[-1] == 4:  # RGBA: drop alpha
            array = array[..., :3]
        return _make_image(array[None], Geometry(ndim=2), path)
    return _image_from_sitk(_read_sitk(path, "image"), path)


def read_labels(path: PathLike, limit: ImageSizeLimit | None = None) -> Labels:
    """Read a label file: Slicer ``.seg.nrrd`` (layers + segment metadata) or a plain labelmap.

    Like :func:`read_image`, the header is checked against ``limit`` before anything is allocated."""
    path = Path(path)
    _check_exists(path, "label file")
    ext = file_extension(path)
    if path.is_dir():
        raise InputError(f"{path}: is a folder; label sets are read from a file")
    check_image_file(path, limit, "label")
    if ext == ".seg.nrrd" or (ext == ".nrrd" and _is_slicer_segmentation(path)):
        return _read_seg_nrrd(path)
    if ext in (".jpg", ".jpeg"):
        raise InputError(f"{path}: JPEG is lossy, so its label values are not exact; use PNG, NIfTI or .seg.nrrd")
    if ext in _PIL_EXTENSIONS:
        array = _read_pil(path, palette_indices=True)
        if array.ndim == 3:
            if not (array[..., :3] == array[..., :1]).all():
                raise InputError(f"{path}: is a colour image; a label image needs one integer value per pixel")
            array = array[..., 0]
        return _labels_from_array(array[None], Geometry(ndim=2), path)
    image = _read_sitk(path, "label")
    if image.GetNumberOfComponentsPerPixel() != 1:
        raise InputError(f"{path}: has {image.GetNumberOfComponentsPerPixel()} components per voxel; "
                         "a label image needs one integer value per voxel")
    array, geometry = _array_and_geometry(image, path)
    return _labels_from_array(array, geometry, path)


def _read_pil(path: Path, palette_indices: bool = False) -> np.ndarray:
    from PIL import Image as PILImage, UnidentifiedImageError

    try:
        with PILImage.open(path) as pil:
            # A palette image is colours for an image, but for labels its indices are the labels.
            if (pil.mode == "P" and not palette_indices) or pil.mode in ("CMYK", "YCbCr", "LAB", "HSV", "PA"):
                pil = pil.convert("RGB")
            array = np.array(pil)
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{path}: cannot read as an image (corrupt or unsupported: {_one_line(error)})") from None
    if array.dtype == bool:
        array = array.astype(np.uint8)
    return array


def _read_sitk(path: Path, what: str):
    import SimpleITK as sitk

    if file_extension(path) in (".nii", ".nii.gz"):
        _check_nifti_complete(path)
    try:
        return sitk.ReadImage(str(path))
    except RuntimeError as error:
        raise InputError(f"{path}: cannot read as an {what} file (corrupt or unsupported format: "
                         f"{_one_line(error)})") from None


def _read_dicom_series(folder: Path) -> Image:
    with _locale_preserved():
        return _read_dicom_series_unguarded(folder)


def _read_dicom_series_unguarded(folder: Path) -> Image:
    import SimpleITK as sitk

    try:
        series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError as error:
        raise InputError(f"{folder}: cannot scan for DICOM files ({_one_line(error)})") from None
    if not series:
        raise InputError(f"{folder}: folder has no DICOM series")
    # Several series (scout + main, ...): the one with the most slices is the volume the user means.
    files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series), key=len)
    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(files)
    try:
        image = reader.Execute()
    except RuntimeError as error:
        raise InputError(f"{folder}: cannot read the DICOM series ({_one_line(error)})") from None
    return _image_from_sitk(image, folder)


def _image_from_sitk(image, path: Path) -> Image:
    components = image.GetNumberOfComponentsPerPixel()
    array, geometry = _array_and_geometry(image, path)
    if components == 4:
        array = array[..., :3]
    elif components not in (1, 3):
        raise InputError(f"{path}: has {components} components per voxel; expected grey or RGB")
    return _make_image(array, geometry, path)


def _array_and_geometry(image, path: Path) -> tuple[np.ndarray, Geometry]:
    """SimpleITK image -> ``(z, y, x[, c])`` array and :class:`Geometry` (2D images become one slice)."""
    import SimpleITK as sitk

    dimension = image.GetDimension()
    if dimension == 4:
        if image.GetSize()[3] != 1:
            raise InputError(f"{path}: is a 4D image ({image.GetSize()[3]} volumes); "
                             "KnowledgeSAM needs a single 3D or 2D image")
        image = image[:, :, :, 0]
        dimension = 3
    if dimension not in (2, 3):
        raise InputError(f"{path}: is a {dimension}D image; expected 2D or 3D")
    array = sitk.GetArrayFromImage(image)
    spacing, origin = list(image.GetSpacing()), list(image.GetOrigin())
    direction = np.asarray(image.GetDirection(), dtype=float).reshape(dimension, dimension)
    if dimension == 2:
        array = array[None]
        spacing, origin = spacing + [1.0], origin + [0.0]
        direction = np.block([[direction, np.zeros((2, 1))], [np.zeros((1, 2)), np.ones((1, 1))]])
    try:
        geometry = Geometry(spacing=spacing, origin=origin, direction=direction, ndim=dimension)
    except ValueError as error:
        raise InputError(f"{path}: invalid geometry ({error})") from None
    return array, geometry


def _make_image(array: np.ndarray, geometry: Geometry, path: Path) -> Image:
    if np.iscomplexobj(array) or not np.issubdtype(array.dtype, np.number):
        raise InputError(f"{path}: pixel type {array.dtype} is not supported")
    if np.issubdtype(array.dtype, np.floating):
        finite = np.isfinite(array)
        if not finite.all():
            bad = "NaN" if np.isnan(array).any() else "infinite"
            raise InputError(f"{path}: has {bad} intensities in {int((~finite).sum())} voxels")
    return Image(array=array, geometry=geometry, source=str(path))


def _labels_from_array(array: np.ndarray, geometry: Geometry, path: Path) -> Labels:
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise InputError(f"{path}: pixel type {array.dtype} is not a label type")
    if np.issubdtype(array.dtype, np.floating):
        if not np.isfinite(array).all() or not np.array_equal(array, np.round(array)):
            raise InputError(f"{path}: has non-integer values; it looks like an intensity image, not labels")
    if array.min(initial=0) < 0:
        raise InputError(f"{path}: has negative values; label values must be >= 0")
    return Labels.from_labelmap(_label_dtype(array), geometry, source=str(path))


def _is_slicer_segmentation(path: Path) -> bool:
    """An NRRD with Slicer's ``Segment0_...`` fields (only the first megabyte is looked at)."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    return b"\nSegment0_" in head.split(b"\n\n", 1)[0]


def _read_seg_nrrd(path: Path) -> Labels:
    import slicerio

    try:
        segmentation = slicerio.read_segmentation(str(path))
    except Exception as error:  # noqa: BLE001 - pynrrd/zlib/slicerio raise many types for bad files
        raise InputError(f"{path}: cannot read as a Slicer segmentation (corrupt or unsupported: "
                         f"{_one_line(error)})") from None
    voxels = segmentation["voxels"]
    if voxels.ndim == 3:
        layers = voxels.transpose(2, 1, 0)[None]
    elif voxels.ndim == 4:
        layers = voxels.transpose(0, 3, 2, 1)
    else:
        raise InputError(f"{path}: segmentation has {voxels.ndim} dimensions; expected 3 or 4")
    layers = np.ascontiguousarray(_label_dtype(layers))
    ndim = 2 if str(segmentation.get(_NDIM_FIELD, "3")).strip() == "2" else 3
    try:
        geometry = Geometry.from_index_to_physical(segmentation["ijkToLPS"], ndim=ndim)
    except ValueError as error:
        raise InputError(f"{path}: invalid geometry ({error})") from None
    segments = []
    for entry in segmentation.get("segments", []):
        layer = int(entry.get("layer", 0))
        if layer >= layers.shape[0]:
            raise InputError(f"{path}: segment '{entry.get('name')}' is on layer {layer}, "
                             f"but the file has {layers.shape[0]} layers")
        terminology = entry.get("terminology")
        segments.append(Segment(
            name=str(entry.get("name", entry.get("id", ""))),
            label_value=int(entry.get("labelValue", 1)),
            layer=layer,
            color=tuple(float(c) for c in entry["color"][:3]) if "color" in entry else None,
            terminology=slicerio.segmentation.terminology_entry_to_string(terminology) if terminology else None,
            id=entry.get("id"),
        ))
    return Labels(layers=layers, geometry=geometry, segments=segments, source=str(path))


# ---------------------------------------------------------------------------------- geometry/ITK

def _to_sitk(array: np.ndarray, geometry: Geometry, vector: bool):
    """``(z, y, x[, c])`` array + geometry -> SimpleITK image (2D when ``geometry.ndim == 2``)."""
    import SimpleITK as sitk

    if geometry.ndim == 2:
        if array.shape[0] != 1:
            raise InputError(f"a 2D image must have one slice; got {array.shape[0]}")
        image = sitk.GetImageFromArray(np.ascontiguousarray(array[0]), isVector=vector)
        direction = geometry.direction_matrix[:2, :2]
        image.SetSpacing(geometry.spacing[:2])
        image.SetOrigin(geometry.origin[:2])
        image.SetDirection(tuple(direction.ravel()))
    else:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array), isVector=vector)
        image.SetSpacing(geometry.spacing)
        image.SetOrigin(geometry.origin)
        image.SetDirection(geometry.direction)
    return image


def resample_labels_to(labels: Labels, geometry: Geometry, shape) -> Labels:
    """Nearest-neighbour resampling of every layer onto another grid ``(z, y, x)`` of ``geometry``,
    as Slicer does when a segmentation is shown on another volume. Segments are kept as they are.

    Raises :class:`InputError` when the two grids do not overlap in physical space.
    """
    import SimpleITK as sitk

    shape = tuple(int(s) for s in shape[:3])
    if labels.shape == shape and labels.geometry.same_grid(geometry):
        return Labels(layers=labels.layers.copy(), geometry=geometry, segments=list(labels.segments),
                      source=labels.source)
    if not _grids_overlap(labels.geometry, labels.shape, geometry, shape):
        raise InputError(f"{labels.source or 'labels'}: do not overlap the target grid in physical space "
                         "(different patient position or coordinate system?)")
    reference = sitk.Image([shape[2], shape[1], shape[0]], sitk.sitkUInt8)
    reference.SetSpacing(geometry.spacing)
    reference.SetOrigin(geometry.origin)
    reference.SetDirection(geometry.direction)
    source_geometry = Geometry(labels.geometry.spacing, labels.geometry.origin, labels.geometry.direction, 3)
    layers = _label_dtype(labels.layers)
    out = np.zeros((layers.shape[0],) + shape, dtype=layers.dtype)
    for index, layer in enumerate(layers):
        moving = _to_sitk(layer, source_geometry, vector=False)
        resampled = sitk.Resample(moving, reference, sitk.Transform(), sitk.sitkNearestNeighbor, 0.0,
                                  moving.GetPixelID())
        out[index] = sitk.GetArrayFromImage(resampled)
    return Labels(layers=out, geometry=geometry, segments=list(labels.segments), source=labels.source)


def _grids_overlap(a: Geometry, shape_a, b: Geometry, shape_b) -> bool:
    """Do the voxel boxes of two grids intersect? (b's corners in a's continuous index space, with the
    half-voxel border each voxel covers; the axis-aligned box of a rotated grid is a safe over-estimate.)"""
    def box_corners(geometry: Geometry, shape) -> np.ndarray:
        nz, ny, nx = shape
        lo, hi = -0.5, np.array([nx, ny, nz]) - 0.5
        corners = np.array([[x, y, z, 1.0] for x in (lo, hi[0]) for y in (lo, hi[1]) for z in (lo, hi[2])])
        return (geometry.index_to_physical() @ corners.T).T

    to_a = np.linalg.inv(a.index_to_physical())
    in_a = (to_a @ box_corners(b, shape_b).T).T[:, :3]
    upper = np.array([shape_a[2], shape_a[1], shape_a[0]]) - 0.5
    eps = 1e-6
    return bool(np.all(in_a.max(axis=0) > -0.5 + eps) and np.all(in_a.min(axis=0) < upper - eps))
