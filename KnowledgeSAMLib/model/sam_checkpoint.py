"""The official SAM ViT-B checkpoint: identify it, verify it, load it safely, and fit it to a 512 px model.

Why this module exists:

* The checkpoint is a 375 MB file the user fetches once (``knowledgesam download-sam``); nothing here
  touches the network. A wrong or truncated file must fail with one clear line, not a shape error later.
* ``torch.load`` runs with ``weights_only=True``: the official file is a plain state dict, so nothing that
  needs arbitrary unpickling (code execution) is ever accepted.
* SAM was trained at 1024 px; KSAM runs at 512 px. Upstream ``ImageEncoderViT`` does not interpolate its
  absolute position embedding at run time, so the model is built at 512 and the checkpoint is resized once
  at load time (``adapt_sam_state_dict``); after that the model loads it strictly.

torch is imported lazily so that the CLI (which discovers every sub-command) stays fast.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

from .._files import file_sha256
from ..errors import WeightsError
from .user_cache import default_cache_dir

if TYPE_CHECKING:  # pragma: no cover
    from torch import Tensor

ProgressFn = Callable[[int, int], None]
"""``progress(done_bytes, total_bytes)``."""


@dataclass(frozen=True)
class CheckpointInfo:
    """Where a checkpoint comes from and how to recognise it."""

    name: str  # file name in the cache folder
    url: str
    sha256: str  # lower-case hex; the authority when verifying
    md5: str | None = None  # informative (the official file names carry an MD5 prefix)
    size_bytes: int | None = None  # used for progress bars and error hints (and checked when size_is_exact)
    size_is_exact: bool = False  # True when the size is known for certain: a wrong size is refused before hashing
    how_to_get: str = ""  # what the user should do to obtain the file ("" = download it, see _how_to_get)


# The official README publishes no hashes. The MD5 and SHA256 below are quoted identically by several
# independent third-party repositories (e.g. the lama-cleaner / iopaint model tables); the MD5 agrees with
# the "01ec64" suffix Meta put in the file name. The size comes from a single third-party source.
# See /work/shared/design/KSAM_SPEC.md §2.6 "Checkpoint".
SAM_VIT_B = CheckpointInfo(
    name="sam_vit_b_01ec64.pth",
    url="https://dl.fbaipublicfiles.com/segment_anything/sam_vit_b_01ec64.pth",
    sha256="ec2df62732614e57411cdcf32a23ffdf28910380d03139ee0f4fcbe91eb8c912",
    md5="01ec64d29a2fca3f0661936605ae66f8",
    size_bytes=375_042_383,
)

DOWNLOAD_COMMAND = "knowledgesam download-sam"
HASH_CACHE_NAME = "verified_sha256.json"


# --------------------------------------------------------------------------------------------- hashing


def hash_cache_path() -> Path:
    """The small JSON remembering hashes already computed, keyed by (path, size, mtime)."""
    return default_cache_dir() / HASH_CACHE_NAME


def _file_key(path: Path) -> tuple[str, dict[str, int]]:
    stat = path.stat()
    return str(path.resolve()), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns}


def _read_hash_cache(cache_file: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(cache_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    entries = data.get("entries") if isinstance(data, dict) else None
    return entries if isinstance(entries, dict) else {}


def cached_sha256(path: Path) -> str | None:
    """The remembered hash of ``path`` if the file has not changed (same size and mtime) since."""
    key, stamp = _file_key(path)
    entry = _read_hash_cache(hash_cache_path()).get(key)
    if isinstance(entry, dict) and all(entry.get(k) == v for k, v in stamp.items()):
        sha = entry.get("sha256")
        return sha if isinstance(sha, str) else None
    return None


def remember_sha256(path: Path, sha256: str) -> None:
    """Record a computed hash; best effort (a read-only cache folder only costs a re-hash next time)."""
    cache_file = hash_cache_path()
    key, stamp = _file_key(path)
    entries = _read_hash_cache(cache_file)
    entries[key] = {**stamp, "sha256": sha256}
    # Forget files that no longer exist so the JSON stays small.
    entries = {k: v for k, v in entries.items() if os.path.exists(k)}
    with contextlib.suppress(OSError):
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=cache_file.parent, prefix=f".{cache_file.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as stream:
                json.dump({"version": 1, "entries": entries}, stream, indent=1)
            os.replace(tmp, cache_file)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _how_to_get(info: CheckpointInfo) -> str:
    return info.how_to_get or f"get it with `{DOWNLOAD_COMMAND}` or from {info.url}"


def verify_checkpoint(
    path: str | os.PathLike,
    info: CheckpointInfo = SAM_VIT_B,
    progress: ProgressFn | None = None,
    use_cache: bool = True,
    cancel: Any = None,
) -> str:
    """Check that ``path`` is exactly ``info``'s file; return its SHA256 (for provenance).

    Raises WeightsError naming the file when it is missing or its hash differs. With ``use_cache``
    a hash computed before for the same (path, size, mtime) is reused instead of re-reading 375 MB.
    """
    path = Path(path).expanduser()
    if not path.exists():
        raise WeightsError(f"checkpoint not found: {path}; {_how_to_get(info)}")
    if not path.is_file():
        raise WeightsError(f"checkpoint path is not a file: {path}; expected the file {info.name}")
    size = path.stat().st_size
    if info.size_is_exact and info.size_bytes is not None and size != info.size_bytes:
        raise WeightsError(f"{path} is not {info.name}: {size:,} bytes, expected {info.size_bytes:,}; nothing was "
                           f"loaded; {_how_to_get(info)}; for your own fine-tuned checkpoint pass its SHA256 "
                           f"(--sam-sha256 HASH)")
    found = cached_sha256(path) if use_cache else None
    if found is None:
        found = file_sha256(path, progress=progress, cancel=cancel)
        if use_cache:
            remember_sha256(path, found)
    if found != info.sha256.lower():
        expected_size = f"{info.size_bytes:,}" if info.size_bytes else "unknown"
        cause = ("a wrong file or a truncated download? " if not info.how_to_get else "a changed or damaged file? ")
        raise WeightsError(
            f"{path} is not {info.name}: SHA256 expected {info.sha256}, found {found} "
            f"(size {size:,} bytes, expected {expected_size}); nothing was loaded; {cause}{_how_to_get(info)}; "
            f"for your own fine-tuned checkpoint pass its SHA256 (--sam-sha256 {found})"
        )
    return found


# --------------------------------------------------------------------------------------------- loading


def load_sam_state_dict(
    path: str | os.PathLike,
    verify: bool = True,
    info: CheckpointInfo = SAM_VIT_B,
    progress: ProgressFn | None = None,
) -> dict[str, Tensor]:
    """Load a SAM checkpoint as ``{name: tensor}`` on the CPU, without unsafe unpickling.

    ``verify=False`` allows other SAM ViT-B checkpoints with the same layout (e.g. a fine-tuned one).
    """
    import torch

    path = Path(path).expanduser()
    if verify:
        verify_checkpoint(path, info, progress=progress)
    elif not path.is_file():
        raise WeightsError(f"checkpoint not found: {path}; {_how_to_get(info)}")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # the unpickler raises many types (IndexError, EOFError, ...) on bad files
        raise WeightsError(
            f"{path} cannot be loaded safely as a plain PyTorch state dict (weights_only=True): "
            f"{_load_error_reason(error)}; a corrupt file, or a checkpoint that pickles more than tensors "
            f"(re-save it with torch.save(model.state_dict(), path))"
        ) from error
    return _require_state_dict(loaded, path)


def _load_error_reason(error: Exception) -> str:
    """The informative line of a torch.load error (torch puts generic advice first)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    for line in lines:
        if "GLOBAL" in line or "Unsupported" in line:
            return line.rstrip(".")
    return lines[0].rstrip(".") if lines else type(error).__name__


def _require_state_dict(loaded: Any, path: Path) -> dict[str, Tensor]:
    import torch

    if not isinstance(loaded, Mapping):
        raise WeightsError(f"{path} holds a {type(loaded).__name__}, not a state dict of tensors")
    not_tensors = [k for k, v in loaded.items() if not (isinstance(k, str) and isinstance(v, torch.Tensor))]
    if not_tensors:
        nested = [k for k in not_tensors if isinstance(loaded[k], Mapping)]
        hint = f"; the state dict may be nested under {nested[0]!r}" if nested else ""
        shown = ", ".join(repr(k) for k in not_tensors[:5]) + (" ..." if len(not_tensors) > 5 else "")
        raise WeightsError(
            f"{path} is not a plain state dict: {len(not_tensors)} entries are not named tensors ({shown}){hint}"
        )
    if not loaded:
        raise WeightsError(f"{path} is an empty state dict")
    return dict(loaded)


# ------------------------------------------------------------------------------------------ adaptation


@dataclass(frozen=True)
class ResizePolicy:
    """How position tables are resampled when the input size differs from the checkpoint's.

    ``pos_embed`` lives on the cell-centred patch grid, so ``align_corners=False`` maps patch centres to
    patch centres. ``rel_pos`` uses exactly the operator upstream ``get_rel_pos`` applies at run time when
    a table is too short (linear, ``align_corners=False``), so the result equals what SAM itself would use.
    """

    pos_embed_mode: str = "bicubic"
    pos_embed_align_corners: bool = False
    pos_embed_antialias: bool = False
    rel_pos_mode: str = "linear"
    rel_pos_align_corners: bool = False


_POS_EMBED = re.compile(r"(^|\.)pos_embed$")
_REL_POS = re.compile(r"(^|\.)attn\.rel_pos_[hw]$")
_MAX_LISTED = 8


def resize_pos_embed(pos_embed: Tensor, grid_hw: tuple[int, int], policy: ResizePolicy = ResizePolicy()) -> Tensor:
    """Resample a 1×H×W×C absolute position embedding to 1×h×w×C on the 2D patch grid."""
    import torch.nn.functional as F

    grid = pos_embed.permute(0, 3, 1, 2).float()  # 1×C×H×W
    kwargs = {"align_corners": policy.pos_embed_align_corners} if policy.pos_embed_mode != "nearest" else {}
    if policy.pos_embed_antialias:
        kwargs["antialias"] = True
    grid = F.interpolate(grid, size=tuple(grid_hw), mode=policy.pos_embed_mode, **kwargs)
    return grid.permute(0, 2, 3, 1).contiguous().to(pos_embed.dtype)


def resize_rel_pos(rel_pos: Tensor, length: int, policy: ResizePolicy = ResizePolicy()) -> Tensor:
    """Resample an L×D relative position table (L = 2·grid−1) to length×D along the first axis."""
    import torch.nn.functional as F

    table = rel_pos.float().t().unsqueeze(0)  # 1×D×L
    kwargs = {"align_corners": policy.rel_pos_align_corners} if policy.rel_pos_mode != "nearest" else {}
    table = F.interpolate(table, size=length, mode=policy.rel_pos_mode, **kwargs)
    return table.squeeze(0).t().contiguous().to(rel_pos.dtype)


def _shape_str(shape: Any) -> str:
    return "×".join(str(int(s)) for s in shape)


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:_MAX_LISTED]) + (f" (+{len(keys) - _MAX_LISTED} more)" if len(keys) > _MAX_LISTED else "")


def adapt_sam_state_dict(
    state_dict: Mapping[str, Tensor],
    target_state_dict: Mapping[str, Any],
    policy: ResizePolicy = ResizePolicy(),
) -> tuple[dict[str, Tensor], list[str]]:
    """Fit a SAM checkpoint to a model built at another input size; return (adapted, resized keys).

    ``target_state_dict`` is the model's own ``state_dict()`` (only ``.shape`` is read, so meta tensors
    work). Tensors whose shapes already match are passed through untouched. Position tables are resampled:
    ``*.pos_embed`` (1×H×W×C) on its 2D grid and ``*.attn.rel_pos_h/w`` ((2g−1)×D) along the first axis.
    Any other difference (a missing or unexpected key, another shape mismatch) raises WeightsError listing
    the keys, so that ``model.load_state_dict(adapted, strict=True)`` cannot fail afterwards.
    """
    missing = sorted(set(target_state_dict) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(target_state_dict))
    adapted: dict[str, Tensor] = {}
    resized: list[str] = []
    mismatched: list[str] = []
    for key, value in state_dict.items():
        if key not in target_state_dict:
            continue
        source, target = tuple(value.shape), tuple(target_state_dict[key].shape)
        if source == target:
            adapted[key] = value
        elif _POS_EMBED.search(key) and len(source) == 4 and source[0] == target[0] == 1 and len(target) == 4 \
                and source[3] == target[3]:
            adapted[key] = resize_pos_embed(value, (target[1], target[2]), policy)
            resized.append(key)
        elif _REL_POS.search(key) and len(source) == len(target) == 2 and source[1] == target[1] \
                and source[0] % 2 == 1 and target[0] % 2 == 1:
            adapted[key] = resize_rel_pos(value, target[0], policy)
            resized.append(key)
        else:
            mismatched.append(f"{key} {_shape_str(source)} vs model {_shape_str(target)}")
    problems = []
    if mismatched:
        problems.append(f"{len(mismatched)} shape mismatches: {_listed(mismatched)}")
    if missing:
        problems.append(f"{len(missing)} model keys missing from the checkpoint: {_listed(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} checkpoint keys the model does not have: {_listed(unexpected)}")
    if problems:
        raise WeightsError("the SAM checkpoint does not fit this model: " + "; ".join(problems))
    return adapted, resized


__all__ = [
    "CheckpointInfo",
    "SAM_VIT_B",
    "ResizePolicy",
    "file_sha256",
    "verify_checkpoint",
    "load_sam_state_dict",
    "adapt_sam_state_dict",
    "resize_pos_embed",
    "resize_rel_pos",
    "hash_cache_path",
]
