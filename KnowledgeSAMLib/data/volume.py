"""Images and label sets with their physical geometry: the one currency every layer trades in.

Why one container: the engine, the CLI, the trainer and the Slicer bridge must never re-derive
spacing/origin/direction on their own (that is where orientation bugs come from). Everything is
stored in ITK/SimpleITK conventions:

* ``array`` is in numpy order ``(z, y, x)`` (Slicer calls this KJI), RGB images add a trailing
  channel axis ``(z, y, x, 3)``. 2D images are stored as one-slice volumes ``(1, y, x[, 3])`` and
  remember ``ndim == 2`` so writers can give them back as 2D files.
* ``spacing``/``origin`` are in ``(x, y, z)`` order, millimetres, LPS physical space.
* ``direction`` is a 3×3 matrix whose *column* ``i`` is the physical direction of index axis ``i``
  (i = x, y, z), exactly SimpleITK's ``GetDirection()`` reshaped row-major.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Iterable, Sequence

import numpy as np

__all__ = ["Geometry", "Image", "Segment", "Labels"]


@dataclass(frozen=True)
class Geometry:
    """Where a ``(z, y, x)`` voxel grid lies in physical (LPS) space."""

    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    ndim: int = 3  # 2 for images that came from (and go back to) 2D files

    def __post_init__(self) -> None:
        object.__setattr__(self, "spacing", tuple(float(v) for v in self.spacing))
        object.__setattr__(self, "origin", tuple(float(v) for v in self.origin))
        object.__setattr__(self, "direction", tuple(float(v) for v in np.asarray(self.direction).ravel()))
        if len(self.spacing) != 3 or len(self.origin) != 3 or len(self.direction) != 9:
            raise ValueError("Geometry needs 3 spacings, 3 origin values and a 3x3 direction")
        if min(self.spacing) <= 0:
            raise ValueError(f"Geometry spacing must be positive, got {self.spacing}")

    @property
    def direction_matrix(self) -> np.ndarray:
        return np.asarray(self.direction, dtype=float).reshape(3, 3)

    def index_to_physical(self) -> np.ndarray:
        """4×4 homogeneous matrix mapping (i, j, k, 1) = (x, y, z) indices to LPS millimetres."""
        matrix = np.eye(4)
        matrix[:3, :3] = self.direction_matrix @ np.diag(self.spacing)
        matrix[:3, 3] = self.origin
        return matrix

    @classmethod
    def from_index_to_physical(cls, matrix: np.ndarray, ndim: int = 3) -> "Geometry":
        """Inverse of :meth:`index_to_physical`: split a 4×4 (or 3×4) IJK→LPS matrix into spacing,
        origin and direction (column norms are the spacings), e.g. slicerio's ``ijkToLPS``."""
        matrix = np.asarray(matrix, dtype=float)
        linear = matrix[:3, :3]
        spacing = np.linalg.norm(linear, axis=0)
        if np.any(spacing <= 0):
            raise ValueError(f"index-to-physical matrix has a zero column: {matrix.tolist()}")
        return cls(spacing=tuple(spacing), origin=tuple(matrix[:3, 3]),
                   direction=tuple((linear / spacing).ravel()), ndim=ndim)

    def physical_corners(self, shape_zyx: Sequence[int]) -> np.ndarray:
        """The 8 corner voxel centres of a grid of ``shape_zyx`` in physical space (8×3)."""
        nz, ny, nx = (int(s) for s in shape_zyx[:3])
        corners = np.array([[i, j, k, 1.0] for i in (0, nx - 1) for j in (0, ny - 1) for k in (0, nz - 1)])
        return (self.index_to_physical() @ corners.T).T[:, :3]

    def same_grid(self, other: "Geometry", atol: float = 1e-4) -> bool:
        return (
            np.allclose(self.spacing, other.spacing, atol=atol)
            and np.allclose(self.origin, other.origin, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )


@dataclass
class Image:
    """An intensity image: ``(z, y, x)`` scalars or ``(z, y, x, 3)`` RGB, with its geometry."""

    array: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    source: str = ""  # file the image came from, for error messages and provenance

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4) or (self.array.ndim == 4 and self.array.shape[-1] != 3):
            raise ValueError(
                f"Image array must be (z, y, x) or (z, y, x, 3); got shape {self.array.shape}"
                + (f" from {self.source}" if self.source else "")
            )

    @property
    def is_rgb(self) -> bool:
        return self.array.ndim == 4

    @property
    def shape(self) -> tuple[int, int, int]:
        """Grid shape ``(z, y, x)`` without the colour axis."""
        return tuple(int(s) for s in self.array.shape[:3])  # type: ignore[return-value]


@dataclass
class Segment:
    """One structure of a label set: a name, the value it has in its layer, and display metadata."""

    name: str
    label_value: int
    layer: int = 0
    color: tuple[float, float, float] | None = None  # RGB in [0, 1]
    terminology: str | None = None  # Slicer terminology entry tag, kept verbatim
    id: str | None = None  # Slicer segment id (e.g. "Segment_1"); defaults to the name when written


@dataclass
class Labels:
    """A set of (possibly overlapping) segments on one grid.

    ``layers`` is ``(L, z, y, x)`` integer label values; overlapping segments live on different
    layers, as in Slicer's ``.seg.nrrd``. A plain labelmap is one layer.
    """

    layers: np.ndarray
    geometry: Geometry = field(default_factory=Geometry)
    segments: list[Segment] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        if self.layers.ndim == 3:
            self.layers = self.layers[None]
        if self.layers.ndim != 4:
            raise ValueError(f"Labels layers must be (L, z, y, x); got shape {self.layers.shape}")

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(s) for s in self.layers.shape[1:])  # type: ignore[return-value]

    def mask(self, segment: Segment | str | int) -> np.ndarray:
        """Boolean ``(z, y, x)`` mask of one segment, given as object, name or label value."""
        seg = segment if isinstance(segment, Segment) else self.find(segment)
        return self.layers[seg.layer] == seg.label_value

    def find(self, key: str | int) -> Segment:
        """Look a segment up by name (exact, then case-insensitive) or by label value."""
        if isinstance(key, (int, np.integer)):
            for seg in self.segments:
                if seg.label_value == int(key):
                    return seg
            raise KeyError(f"label value {key} is not in {self._describe()}")
        for seg in self.segments:
            if seg.name == key or seg.id == key:
                return seg
        for seg in self.segments:
            if seg.name.lower() == str(key).lower():
                return seg
        raise KeyError(f"segment {key!r} is not in {self._describe()}")

    def select(self, keys: Iterable[str | int]) -> list[Segment]:
        return [self.find(k) for k in keys]

    def with_segments(self, segments: list[Segment]) -> "Labels":
        return replace(self, segments=list(segments))

    def _describe(self) -> str:
        names = ", ".join(f"{s.name}={s.label_value}" for s in self.segments) or "no segments"
        return f"{self.source or 'the labels'} ({names})"

    @classmethod
    def from_labelmap(cls, labelmap: np.ndarray, geometry: Geometry, names: dict[int, str] | None = None,
                      source: str = "") -> "Labels":
        """Wrap a plain integer labelmap; every non-zero value becomes a segment (named by ``names``)."""
        values = [int(v) for v in np.unique(labelmap) if v != 0]
        names = names or {}
        segments = [Segment(name=names.get(v, f"Label {v}"), label_value=v) for v in values]
        return cls(layers=np.asarray(labelmap)[None], geometry=geometry, segments=segments, source=source)
