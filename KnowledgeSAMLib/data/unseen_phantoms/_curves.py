"""Curves and frames for the unseen phantoms: centripetal Catmull-Rom splines, arc-length resampling,
and rotations from axis-angle pairs.

Why: vessels, bowel and ureters are tubes around smooth curves through a handful of anatomical
waypoints; resampling by arc length lets a tube be rasterised as short capsules of known length.
"""

from __future__ import annotations

import numpy as np

__all__ = ["catmull_rom", "resample_by_length", "axis_rotation"]


def catmull_rom(points: np.ndarray, per_segment: int = 16) -> np.ndarray:
    """A centripetal Catmull-Rom curve through ``points`` (n × d, n ≥ 2): it passes through every point
    and does not overshoot or form loops between close waypoints. Returns (m × d) samples."""
    pts = np.asarray(points, dtype=float)
    if len(pts) < 2:
        raise ValueError("a curve needs at least two points")
    ends = np.vstack([2 * pts[0] - pts[1], pts, 2 * pts[-1] - pts[-2]])
    samples = []
    u = np.linspace(0.0, 1.0, per_segment, endpoint=False)[:, None]
    for i in range(1, len(ends) - 2):
        p0, p1, p2, p3 = ends[i - 1], ends[i], ends[i + 1], ends[i + 2]
        t0 = 0.0
        t1 = t0 + max(np.linalg.norm(p1 - p0), 1e-6) ** 0.5
        t2 = t1 + max(np.linalg.norm(p2 - p1), 1e-6) ** 0.5
        t3 = t2 + max(np.linalg.norm(p3 - p2), 1e-6) ** 0.5
        t = t1 + u * (t2 - t1)
        a1 = (t1 - t) / (t1 - t0) * p0 + (t - t0) / (t1 - t0) * p1
        a2 = (t2 - t) / (t2 - t1) * p1 + (t - t1) / (t2 - t1) * p2
        a3 = (t3 - t) / (t3 - t2) * p2 + (t - t2) / (t3 - t2) * p3
        b1 = (t2 - t) / (t2 - t0) * a1 + (t - t0) / (t2 - t0) * a2
        b2 = (t3 - t) / (t3 - t1) * a2 + (t - t1) / (t3 - t1) * a3
        samples.append((t2 - t) / (t2 - t1) * b1 + (t - t1) / (t2 - t1) * b2)
    samples.append(pts[-1][None])
    return np.vstack(samples)


def resample_by_length(curve: np.ndarray, step: float) -> tuple[np.ndarray, np.ndarray]:
    """Points every ``step`` along a polyline (first and last kept) and their arc-length fraction in [0, 1]."""
    curve = np.asarray(curve, dtype=float)
    lengths = np.linalg.norm(np.diff(curve, axis=0), axis=1)
    arc = np.concatenate([[0.0], np.cumsum(lengths)])
    total = float(arc[-1])
    count = max(2, int(np.ceil(total / max(step, 1e-6))) + 1)
    wanted = np.linspace(0.0, total, count)
    points = np.stack([np.interp(wanted, arc, curve[:, k]) for k in range(curve.shape[1])], axis=1)
    return points, wanted / max(total, 1e-9)


def axis_rotation(axis: np.ndarray, angle: float) -> np.ndarray:
    """3×3 rotation by ``angle`` radians about ``axis`` (Rodrigues)."""
    k = np.asarray(axis, dtype=float)
    k = k / np.linalg.norm(k)
    skew = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(angle) * skew + (1 - np.cos(angle)) * (skew @ skew)
