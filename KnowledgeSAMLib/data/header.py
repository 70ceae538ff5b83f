"""Read an image file's header before its voxels, and refuse what would not fit or is not there.

Why: readers (ITK, pynrrd, PIL) allocate what the header declares before they read the data. A hostile
or damaged header therefore costs memory before any error: a 1 KB NRRD declaring ``sizes: 1600 1600
1600`` took a run to 8 GB. :func:`check_image_file` runs before every read in :mod:`.io`:

1. the header alone (SimpleITK's ``ReadImageInformation``, PIL's lazy ``open``, at most the first
   :data:`HEADER_BYTES` of an NRRD/MetaImage text header) gives the size and pixel type;
2. an image whose decoded size exceeds the :class:`~.limits.ImageSizeLimit` is refused, naming the file,
   the size and the limit;
3. the voxel data the header promises must be in the file: raw data by the file size, compressed data
   (only for large images, where a short stream would cost real memory) by streaming through it in 1 MB
   chunks. A truncated file is refused before the reader allocates.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import locale
import os
import re
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import InputError
from .limits import ImageSizeLimit, format_bytes

__all__ = ["ImageHeader", "read_header", "check_image_file", "HEADER_BYTES", "STREAM_CHECK_BYTES"]

HEADER_BYTES = 1 << 20  # longest text header (NRRD, MetaImage) we read
STREAM_CHECK_BYTES = 64 << 20  # compressed data of larger images is streamed through before reading
_CHUNK = 1 << 20
_PIL_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")


@dataclass(frozen=True)
class ImageHeader:
    """What a file's header declares: voxels per axis (file order, x first), components and their type."""

    path: Path
    size: tuple[int, ...]
    components: int
    component_bytes: int
    type_name: str
    data: Callable[[], None] | None = None  # checks that the voxel data is present (raises InputError)

    @property
    def voxels(self) -> int:
        count = 1
        for side in self.size:
            count *= max(int(side), 1)
        return count

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded image in memory."""
        return self.voxels * max(self.components, 1) * max(self.component_bytes, 1)

    def describe(self) -> str:
        channels = f" x {self.components} components" if self.components > 1 else ""
        return f"{' x '.join(str(s) for s in self.size)} voxels{channels} of {self.type_name}"


def file_extension(path: str | os.PathLike) -> str:
    """Lower-case extension including compound ones (``.nii.gz``, ``.seg.nrrd``)."""
    name = Path(path).name.lower()
    for ext in (".seg.nrrd", ".nii.gz"):
        if name.endswith(ext):
            return ext
    return Path(name).suffix


def _unreadable(path: Path, what: str, reason: str) -> InputError:
    return InputError(f"{path}: cannot read as an {what} file (corrupt or unsupported format: {reason})")


def check_image_file(path: str | os.PathLike, limit: ImageSizeLimit | None = None,
                     what: str = "image", data: bool = True) -> ImageHeader:
    """The header of ``path``, after refusing an image beyond ``limit`` (default: from the free memory) or
    (``data``) one whose voxel data is missing. Costs no more than the header and 1 MB buffers; ``data=False``
    skips the data check (which may stream through a large compressed file) for a quick look at many files
    whose data is checked again when they are read."""
    path = Path(path)
    header = read_header(path, what)
    limit = limit or ImageSizeLimit.default()
    if header.nbytes > limit.max_bytes:
        raise InputError(f"{path}: the {what} is {header.describe()} ({format_bytes(header.nbytes)} in memory), "
                         f"more than the limit of {limit.describe()}; raise it with --max-image-gb or "
                         f"$KNOWLEDGESAM_MAX_IMAGE_GB if this is meant")
    if data and header.data is not None:
        header.data()
    return header


def read_header(path: str | os.PathLike, what: str = "image") -> ImageHeader:
    """Size and pixel type from the header only (a DICOM folder: its largest series)."""
    path = Path(path)
    ext = file_extension(path)
    if path.is_dir():
        return _dicom_header(path)
    if ext in _PIL_EXTENSIONS:
        return _pil_header(path, what)
    if ext in (".nrrd", ".nhdr", ".seg.nrrd"):
        found = _nrrd_header(path, what)
        if found is not None:
            return found
    header = _itk_header(path, what)
    if ext in (".mha", ".mhd"):
        return _with_data_check(header, lambda: _check_metaimage_data(path, header.nbytes))
    if ext in (".nii", ".nii.gz"):
        return _with_data_check(header, lambda: check_nifti_complete(path))
    return header


def _with_data_check(header: ImageHeader, check: Callable[[], None]) -> ImageHeader:
    return ImageHeader(header.path, header.size, header.components, header.component_bytes, header.type_name, check)


# ------------------------------------------------------------------------------------- messages

_SOURCE_LOCATION = re.compile(r"(?:Exception thrown in SimpleITK \w+:\s*)?\S+\.(?:cxx|hxx|txx|cpp|h)(?::\d+)?:?")


def one_line(error: BaseException, limit: int = 200) -> str:
    """The most informative line of a (often multi-line, ITK) exception message."""
    message = str(error)
    for marker in ("sitk::ERROR:", "itk::ERROR:", "ITK ERROR:"):  # "...ITK ERROR: ImageIO(0x...): <the reason>\n..."
        if marker in message:
            message = re.sub(r"^\s*\w+\(0x[0-9a-fA-F]+\):", "", message.split(marker, 1)[1])
            break
    message = _SOURCE_LOCATION.sub("", message)  # "/tmp/SimpleITK-build/.../itkNrrdImageIO.cxx:935:" says nothing
    lines = [line.strip(" :") for line in message.splitlines() if line.strip(" :")]
    return (lines[0] if lines else type(error).__name__)[:limit]


@contextlib.contextmanager
def locale_preserved():
    """GDCM resets the process locale to "C" when it scans DICOM files; put the caller's back.

    Otherwise every later ``open()`` without an explicit encoding in the same process (ours, a test's,
    or a Slicer user's script) silently switches to ASCII.
    """
    saved = locale.setlocale(locale.LC_ALL)
    try:
        yield
    finally:
        try:
            locale.setlocale(locale.LC_ALL, saved)
        except locale.Error:  # pragma: no cover - a composite locale the C library will not take back
            pass


def _nifti_expected_bytes(header: bytes) -> int | None:
    """Bytes a NIfTI-1/2 file must hold (data offset + voxel data), from its header; None if unknown."""
    for order in "<>":
        if len(header) >= 348 and struct.unpack(order + "i", header[:4])[0] == 348:
            dims = struct.unpack(order + "8h", header[40:56])
            bitpix = struct.unpack(order + "h", header[72:74])[0]
            offset = struct.unpack(order + "f", header[108:112])[0]
        elif len(header) >= 540 and struct.unpack(order + "i", header[:4])[0] == 540:
            bitpix = struct.unpack(order + "h", header[14:16])[0]
            dims = struct.unpack(order + "8q", header[16:80])
            offset = struct.unpack(order + "q", header[168:176])[0]
        else:
            continue
        if not 1 <= dims[0] <= 7 or bitpix <= 0 or not np.isfinite(offset):
            return None
        return int(offset) + int(np.prod([max(int(d), 1) for d in dims[1:dims[0] + 1]])) * bitpix // 8
    return None


def check_nifti_complete(path: Path) -> None:
    """ITK reads a truncated NIfTI (plain or gzip) without complaint and fills the rest with zeros;
    refuse it instead. Fast path for small images: the gzip trailer holds the uncompressed size; when it
    does not match the header (multi-member gzip, odd writers), or when the image is large enough that a
    forged trailer would cost real memory (over STREAM_CHECK_BYTES), the stream is decompressed in 4 MB
    chunks to count it (no more than the header declares is ever read)."""
    truncated = InputError(f"{path}: file is truncated or corrupt (incomplete NIfTI data)")
    try:  # an unreadable header is left for the image reader to report
        opener = open if file_extension(path) == ".nii" else gzip.open
        with opener(path, "rb") as handle:
            expected = _nifti_expected_bytes(handle.read(540))
    except (EOFError, OSError, zlib.error):
        return
    if expected is None:
        return
    if file_extension(path) == ".nii":
        if path.stat().st_size < expected:
            raise truncated
        return
    try:
        with open(path, "rb") as handle:
            handle.seek(-4, os.SEEK_END)
            stored_size = int.from_bytes(handle.read(4), "little")
        if stored_size == expected % (1 << 32) and expected <= STREAM_CHECK_BYTES:
            return
        total = 0
        with gzip.open(path, "rb") as handle:
            while total < expected and (chunk := handle.read(1 << 22)):
                total += len(chunk)
    except (EOFError, OSError, zlib.error):
        raise truncated from None
    if total < expected:
        raise truncated


# ------------------------------------------------------------------------------------------ ITK

def _itk_header(path: Path, what: str, strip: Callable[[BaseException], str] | None = None) -> ImageHeader:
    import SimpleITK as sitk

    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as error:
        raise _unreadable(path, what, one_line(error)) from None
    type_name = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = re.search(r"(\d+)-bit", type_name)
    component_bytes = (int(bits.group(1)) // 8 if bits else 8) * (2 if "complex" in type_name else 1)
    return ImageHeader(path, tuple(int(s) for s in reader.GetSize()), int(reader.GetNumberOfComponents()),
                       component_bytes, type_name)


def _dicom_header(folder: Path) -> ImageHeader:
    import SimpleITK as sitk

    with locale_preserved():
        try:
            series = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
            files = max((sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), sid) for sid in series),
                        key=len, default=())
        except RuntimeError as error:
            raise InputError(f"{folder}: cannot scan for DICOM files ({one_line(error)})") from None
    if not files:
        raise InputError(f"{folder}: folder has no DICOM series")
    first = _itk_header(Path(files[0]), "DICOM")
    size = tuple(first.size[:2]) + (len(files),)
    return ImageHeader(folder, size, first.components, first.component_bytes, first.type_name)


# ------------------------------------------------------------------------------------------ PIL

def _pil_header(path: Path, what: str) -> ImageHeader:
    from PIL import Image as PILImage, UnidentifiedImageError

    try:
        with PILImage.open(path) as pil:  # lazy: reads the header only
            width, height = pil.size
            bands = len(pil.getbands())
            mode = pil.mode
    except PILImage.DecompressionBombError as error:
        raise InputError(f"{path}: the {what} declares more pixels than an image may have ({error})") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as error:
        raise InputError(f"{path}: cannot read as an image (corrupt or unsupported: {error})") from None
    band_bytes = 4 if mode in ("I", "F") else (2 if mode.startswith("I;16") else 1)
    return ImageHeader(path, (width, height), bands, band_bytes, mode)


# ----------------------------------------------------------------------------------------- NRRD

def _text_header(path: Path, what: str) -> tuple[bytes, int]:
    """The text header (without the blank line ending it) and where the data starts; at most HEADER_BYTES."""
    with open(path, "rb") as handle:
        head = handle.read(HEADER_BYTES)
    for separator in (b"\r\n\r\n", b"\n\n"):
        end = head.find(separator)
        if end >= 0:
            return head[:end], end + len(separator)
    if os.path.getsize(path) > len(head):
        raise InputError(f"{path}: the {what} file's header is longer than {format_bytes(HEADER_BYTES)}; "
                         "not an image header")
    return head, len(head)  # a detached header (.nhdr) may end without a blank line


def _nrrd_header(path: Path, what: str) -> ImageHeader | None:
    """The header by pynrrd (bounded read); None when pynrrd cannot parse it (ITK then decides)."""
    import nrrd

    text, data_start = _text_header(path, what)
    if not text.startswith(b"NRRD"):
        raise _unreadable(path, what, "no NRRD magic line")
    try:
        fields = nrrd.read_header(text.decode("latin-1").splitlines())
        dtype = np.dtype(nrrd.reader._determine_datatype(fields))
        size = tuple(int(s) for s in fields["sizes"])
    except Exception:  # noqa: BLE001 - pynrrd is stricter than ITK; let ITK judge such files
        return None
    header = ImageHeader(path, size, 1, dtype.itemsize, str(dtype))
    return _with_data_check(header, lambda: _check_nrrd_data(path, fields, data_start, header))


def _check_nrrd_data(path: Path, fields: dict, data_start: int, header: ImageHeader) -> None:
    data_file = fields.get("data file") or fields.get("datafile")
    if data_file is not None:
        text = str(data_file)
        if text.startswith("LIST") or "%" in text or " " in text.strip():
            return  # multi-file data: each file is read as it comes
        source, start = (Path(text) if Path(text).is_absolute() else path.parent / text), 0
        if not source.is_file():
            raise InputError(f"{path}: its data file {source} is missing")
    else:
        source, start = path, data_start
    encoding = str(fields.get("encoding", "raw")).lower()
    skip = max(int(fields.get("byte skip", 0) or 0), 0)
    _check_data(path, source, start, encoding, header, skip)


def _check_data(path: Path, source: Path, start: int, encoding: str, header: ImageHeader, skip: int = 0) -> None:
    expected = header.nbytes
    stored = os.path.getsize(source) - start
    if encoding == "raw":
        if stored - skip < expected:
            raise _truncated(path, max(stored - skip, 0), expected)
    elif encoding in ("ascii", "text", "txt"):
        if stored < 2 * header.voxels - 1:
            raise _truncated(path, stored, expected)
    elif encoding == "hex":
        if stored < 2 * expected:
            raise _truncated(path, stored // 2, expected)
    elif encoding in ("gzip", "gz", "bzip2", "bz2", "zlib") and expected > STREAM_CHECK_BYTES:
        found = _decompressed_length(source, start, encoding, expected + skip)
        if found < expected + skip:
            raise _truncated(path, max(found - skip, 0), expected)


def _truncated(path: Path, found: int, expected: int) -> InputError:
    return InputError(f"{path}: file is truncated or corrupt: it holds {format_bytes(found)} of the "
                      f"{format_bytes(expected)} of voxel data its header declares")


def _decompressed_length(source: Path, start: int, encoding: str, enough: int) -> int:
    """Bytes the compressed stream yields, counted in 1 MB chunks and stopping at ``enough``."""
    total = 0
    with open(source, "rb") as raw:
        raw.seek(start)
        if encoding in ("bzip2", "bz2"):
            stream = bz2.BZ2File(raw)
        elif encoding == "zlib":
            stream = _ZlibReader(raw)
        else:
            stream = gzip.GzipFile(fileobj=raw)
        try:
            while total < enough:
                chunk = stream.read(_CHUNK)
                if not chunk:
                    break
                total += len(chunk)
        except (OSError, EOFError, zlib.error):
            pass  # a damaged stream ends here: what came out so far is what there is
    return total


class _ZlibReader:
    """A zlib stream (MetaImage ``CompressedData``) read in bounded chunks, like a file."""

    def __init__(self, raw) -> None:
        self.raw, self.inflate, self.pending, self.tail = raw, zlib.decompressobj(), b"", b""

    def read(self, size: int) -> bytes:
        while len(self.pending) < size and not self.inflate.eof:
            data = self.tail or self.raw.read(_CHUNK)
            if not data:
                break
            self.pending += self.inflate.decompress(data, size - len(self.pending))  # never more than asked
            self.tail = self.inflate.unconsumed_tail
        out, self.pending = self.pending[:size], self.pending[size:]
        return out


# ----------------------------------------------------------------------------------- MetaImage

def _check_metaimage_data(path: Path, expected: int) -> None:
    """MetaImage (``.mha``/``.mhd``): the header ends with ``ElementDataFile = LOCAL`` or a file name."""
    with open(path, "rb") as handle:
        text = handle.read(HEADER_BYTES)
    fields: dict[str, str] = {}
    offset = 0
    for line in text.split(b"\n"):
        offset += len(line) + 1
        key, _, value = line.decode("latin-1").partition("=")
        fields[key.strip()] = value.strip()
        if key.strip() == "ElementDataFile":
            break
    else:
        return  # no data line within the header limit: ITK will judge
    name = fields["ElementDataFile"]
    if name.upper() == "LOCAL":
        source, start = path, offset
    elif name.upper().startswith("LIST") or "%" in name or " " in name:
        return
    else:
        source, start = (Path(name) if Path(name).is_absolute() else path.parent / name), 0
        if not source.is_file():
            raise InputError(f"{path}: its data file {source} is missing")
    compressed = fields.get("CompressedData", "False").lower() == "true"
    _check_data(path, source, start, "zlib" if compressed else "raw", ImageHeader(path, (expected,), 1, 1, "bytes"))
