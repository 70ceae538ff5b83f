"""Hostile and oversized inputs: headers are read first, refused in one line, and cost almost nothing.

A header may declare any size; the readers (ITK, pynrrd, PIL) allocate what it declares before they find the
data missing — a 1.1 KB NRRD declaring 1600³ voxels once took a run to 8 GB. Every case here is a file of a
few KB: the refusal must name the file, the size and the limit (or the missing data), carry no ITK
``file.cxx:line``, and — measured in a fresh interpreter — cost less than 100 MB of memory.
"""

from __future__ import annotations

import gzip
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

from KnowledgeSAMLib.cli import main
from KnowledgeSAMLib.data import limits
from KnowledgeSAMLib.data.io import read_image, read_labels, write_image
from KnowledgeSAMLib.data.limits import ImageSizeLimit
from KnowledgeSAMLib.data.volume import Image
from KnowledgeSAMLib.errors import InputError

from reliability_helpers import ROOT, make_case, sha256
from test_infer_fakes import ThresholdModel

MAX_COST_MB = 100


def _nrrd(path: Path, sizes: str, kind: str = "uint8", encoding: str = "raw", data: bytes = b"\0" * 1000,
          extra: str = "") -> Path:
    header = (f"NRRD0004\ntype: {kind}\ndimension: {len(sizes.split())}\nsizes: {sizes}\nendian: little\n"
              f"encoding: {encoding}\nspace: left-posterior-superior\n{extra}\n")
    path.write_bytes(header.encode() + data)
    return path


def _nifti(path: Path, dims: tuple[int, int, int], forged_trailer: bool = False) -> Path:
    header = bytearray(348)
    struct.pack_into("<i", header, 0, 348)
    struct.pack_into("<8h", header, 40, 3, *dims, 1, 1, 1, 1)
    struct.pack_into("<hh", header, 70, 2, 8)  # datatype uint8, bitpix 8
    struct.pack_into("<8f", header, 76, 1, 1, 1, 1, 1, 1, 1, 1)
    struct.pack_into("<f", header, 108, 352.0)  # vox_offset
    header[344:348] = b"n+1\0"
    raw = bytes(header) + b"\0" * 4 + b"\0" * 1000
    data = gzip.compress(raw) if path.name.endswith(".gz") else raw
    if forged_trailer:  # the gzip trailer claims the size the header declares: only reading tells the truth
        data = data[:-4] + struct.pack("<I", (352 + dims[0] * dims[1] * dims[2]) % (1 << 32))
    path.write_bytes(data)
    return path


def _png(path: Path, width: int, height: int) -> Path:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64))
                     + chunk(b"IEND", b""))
    return path


def hostile_files(folder: Path) -> dict[str, tuple[Path, str]]:
    """name -> (file, what its refusal must say) — all of them a few KB."""
    folder.mkdir(parents=True, exist_ok=True)
    mha = folder / "big.mha"
    mha.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 1000 1000 1000\nElementType = MET_SHORT\n"
                    b"ElementDataFile = LOCAL\n" + b"\0" * 1000)
    mhd = folder / "detached.mhd"
    mhd.write_bytes(b"ObjectType = Image\nNDims = 3\nDimSize = 800 800 800\nElementType = MET_SHORT\n"
                    b"ElementDataFile = detached.raw\n")
    long_header = folder / "long-header.nrrd"
    long_header.write_bytes(b"NRRD0004\n# " + b"x" * (2 << 20) + b"\n")
    return {
        "nrrd 1600^3 raw, 1000 bytes": (_nrrd(folder / "hostile.nrrd", "1600 1600 1600"), "truncated"),
        "nrrd 2200^3 int16": (_nrrd(folder / "huge.nrrd", "2200 2200 2200", "int16"), "truncated"),
        "nrrd 400^3 gzip, short stream": (_nrrd(folder / "short.nrrd", "400 400 400", "int16", "gzip",
                                                gzip.compress(b"\0" * 1000)), "truncated"),
        "seg.nrrd 1600^3": (_nrrd(folder / "hostile.seg.nrrd", "1600 1600 1600", extra="Segment0_ID:=a\n"),
                            "truncated"),
        "mha 1000^3, 1000 bytes": (mha, "truncated"),
        "mhd without its data file": (mhd, "data file"),
        "nifti 2000^3, 1000 bytes": (_nifti(folder / "hostile.nii", (2000, 2000, 2000)), "truncated"),
        "nifti.gz 2000^3, 1000 bytes": (_nifti(folder / "hostile.nii.gz", (2000, 2000, 2000)), "truncated"),
        "nifti.gz 1200^3, forged gzip trailer": (_nifti(folder / "forged.nii.gz", (1200, 1200, 1200), True),
                                                 "truncated|cannot read"),
        "header of 2 MB": (long_header, "header is longer"),
        "png 100000^2": (_png(folder / "bomb.png", 100_000, 100_000), "more pixels"),
    }


def _read(path: Path):
    return (read_labels if path.name.endswith(".seg.nrrd") else read_image)(path)


def _assert_clean(message: str, path: Path) -> None:
    assert "\n" not in message and str(path) in message, message
    for noise in (".cxx", ".hxx", "itk::", "ITK ERROR", "0x", "Traceback"):
        assert noise not in message, message


HOSTILE = ["nrrd 1600^3 raw, 1000 bytes", "nrrd 2200^3 int16", "nrrd 400^3 gzip, short stream", "seg.nrrd 1600^3",
           "mha 1000^3, 1000 bytes", "mhd without its data file", "nifti 2000^3, 1000 bytes",
           "nifti.gz 2000^3, 1000 bytes", "nifti.gz 1200^3, forged gzip trailer", "header of 2 MB", "png 100000^2"]


@pytest.mark.parametrize("name", HOSTILE)
def test_a_hostile_header_is_refused_in_one_line(name, tmp_path, monkeypatch):
    monkeypatch.setenv("KNOWLEDGESAM_MAX_IMAGE_GB", "100000")  # only the data check stands between us and ITK
    path, says = hostile_files(tmp_path)[name]
    before = sha256(path)
    with pytest.raises(InputError, match=says) as error:
        _read(path)
    _assert_clean(str(error.value), path)
    assert sha256(path) == before


def test_a_forged_gzip_trailer_does_not_pass_for_the_data_of_a_large_nifti(tmp_path):
    """The trailer's size is four bytes anyone can write: above 64 MB the stream itself is counted."""
    from KnowledgeSAMLib.data.header import check_nifti_complete

    with pytest.raises(InputError, match="truncated"):
        check_nifti_complete(_nifti(tmp_path / "forged.nii.gz", (1200, 1200, 1200), forged_trailer=True))


def test_an_image_beyond_the_limit_names_file_size_and_limit(tmp_path):
    path = _nrrd(tmp_path / "hostile.nrrd", "1600 1600 1600")
    with pytest.raises(InputError) as error:
        read_image(path, ImageSizeLimit.from_gb(1, "set by --max-image-gb 1"))
    message = str(error.value)
    _assert_clean(message, path)
    assert "1600 x 1600 x 1600 voxels of uint8" in message and "3.8 GB" in message, message
    assert "limit of 1.0 GB (set by --max-image-gb 1)" in message and "--max-image-gb" in message


def test_the_default_limit_follows_the_free_memory_and_the_flag_raises_it(tmp_path, monkeypatch):
    volume = Image(np.zeros((40, 256, 256), np.int16))  # 5 MB in memory, a few KB compressed on disk
    path = write_image(volume, tmp_path / "zeros.nrrd")
    monkeypatch.delenv(limits.ENV_MAX_IMAGE_GB, raising=False)
    monkeypatch.setattr(limits, "available_memory", lambda: 8 << 20)  # 8 MB free: limit 2 MB
    with pytest.raises(InputError, match=r"limit of 2\.0 MB \(1/4 of the 8\.0 MB of memory available\)"):
        read_image(path)
    assert read_image(path, ImageSizeLimit.from_gb(0.01)).shape == (40, 256, 256)
    monkeypatch.setenv(limits.ENV_MAX_IMAGE_GB, "0.01")
    assert read_image(path).shape == (40, 256, 256)


def test_hostile_headers_cost_less_than_100_mb(tmp_path):
    """Measured in a fresh interpreter (peak resident memory before and after reading every hostile file)."""
    files = hostile_files(tmp_path)
    script = f"""
import json, resource, sys
sys.path.insert(0, {str(ROOT)!r})
import numpy as np
from KnowledgeSAMLib.data.io import read_image, read_labels, write_image
from KnowledgeSAMLib.data.volume import Image
from KnowledgeSAMLib.errors import InputError
write_image(Image(np.zeros((4, 5, 6), np.int16)), {str(tmp_path / 'warm.nrrd')!r})
read_image({str(tmp_path / 'warm.nrrd')!r})
for warm in ({str(tmp_path / 'warm.nii.gz')!r}, {str(tmp_path / 'warm.png')!r}):
    write_image(Image(np.zeros((1, 5, 6), np.uint8)) if warm.endswith('png') else Image(np.zeros((4, 5, 6), np.int16)), warm)
    read_image(warm)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
refused = {{}}
for path in sys.argv[1:]:
    try:
        (read_labels if path.endswith('.seg.nrrd') else read_image)(path)
        refused[path] = False
    except InputError:
        refused[path] = True
print(json.dumps({{"mb": (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - base) / 1024, "refused": refused}}))
"""
    env = {"KNOWLEDGESAM_MAX_IMAGE_GB": "100000", "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, "-c", script, *(str(p) for p, _ in files.values())], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert all(result["refused"].values()), result
    assert result["mb"] < MAX_COST_MB, result


@pytest.fixture()
def fake(monkeypatch):
    from KnowledgeSAMLib.model import registry

    model = ThresholdModel(image_size=32)
    monkeypatch.setattr(registry, "resolve_model", lambda name, sam_checkpoint=None, sam_sha256=None: model)
    return model


@pytest.mark.parametrize("role", ["--target", "--reference", "--reference-labels"])
def test_the_cli_refuses_a_hostile_input_before_any_compute(role, tmp_path, fake, capsys):
    case = make_case(tmp_path / "in", tmp_path / "unused-model")
    hostile = _nrrd(tmp_path / ("hostile.seg.nrrd" if role == "--reference-labels" else "hostile.nrrd"),
                    "1600 1600 1600")
    argv = {"--target": str(case.target), "--reference": str(case.reference),
            "--reference-labels": str(case.reference_labels), role: str(hostile)}
    before = {**case.fingerprints(), str(hostile): sha256(hostile)}
    out = tmp_path / "out"
    code = main(["segment", "--quiet", "--max-image-gb", "1", "--output", str(out / "x.seg.nrrd"),
                 *[item for pair in argv.items() for item in pair]])
    err = capsys.readouterr().err.strip()
    assert code == 2 and err.startswith("knowledgesam: error: ") and "\n" not in err, err
    assert str(hostile) in err and "3.8 GB" in err and "limit of 1.0 GB" in err, err
    assert fake.encoded_images == 0 and not out.exists()
    assert {**case.fingerprints(), str(hostile): sha256(hostile)} == before


def test_a_damaged_header_names_no_itk_source_file(tmp_path):
    path = tmp_path / "bad.nrrd"
    path.write_bytes(b"NRRD0004\ntype: uint8\ndimension: 3\nsizes: 4 4\nencoding: raw\n\n" + b"\0" * 64)
    with pytest.raises(InputError, match="cannot read") as error:
        read_image(path)
    _assert_clean(str(error.value), path)


def test_reference_labels_on_another_grid_are_resampled_with_a_notice(tmp_path, fake, capsys):
    """Not refused (Slicer does the same), but never silently: stderr and the sidecar's notes say so."""
    from KnowledgeSAMLib.data.io import read_labels, write_labels
    from KnowledgeSAMLib.data.volume import Geometry, Labels

    case = make_case(tmp_path / "in", tmp_path / "unused-model")
    labels = read_labels(case.reference_labels)
    shifted = Geometry(labels.geometry.spacing, tuple(np.add(labels.geometry.origin, (1.5, 0, 0))),
                       labels.geometry.direction)
    moved = write_labels(Labels(labels.layers, shifted, labels.segments), tmp_path / "moved.seg.nrrd")
    out = tmp_path / "out.seg.nrrd"
    assert main(["segment", "--quiet", "--target", str(case.target), "--reference", str(case.reference),
                 "--reference-labels", str(moved), "--output", str(out)]) == 0
    err = capsys.readouterr().err
    notices = [line for line in err.splitlines() if line.startswith("knowledgesam: notice: ")]
    assert len(notices) == 1 and "another grid" in notices[0] and "origin" in notices[0] and str(moved) in notices[0]
    notes = json.loads((tmp_path / "out.seg.nrrd.ksam.json").read_text(encoding="utf-8"))["notes"]
    assert any("another grid" in note for note in notes)


def test_the_random_weights_warning_goes_to_stderr(tmp_path, capsys):
    case = make_case(tmp_path / "in", tmp_path / "unused-model")
    case.model = "tiny"  # a config name: random weights, and a warning saying so
    assert main(case.anchor_argv(tmp_path / "o.seg.nrrd")) == 0
    captured = capsys.readouterr()
    assert "randomly initialised" not in captured.out
    assert any(line.startswith("knowledgesam: warning: ") and "randomly initialised" in line
               for line in captured.err.splitlines()), captured.err
