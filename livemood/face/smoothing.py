"""Landmark smoothing: One Euro filters on the rigid head motion and on the non-rigid face shape.

Face-mesh landmarks shake by about 0.2 % of the face height from frame to frame even on a still face. Filtering
every coordinate on its own either leaves that jitter or lags behind head motion, because each coordinate's
speed estimate is as noisy as the coordinate. This module splits each frame's landmarks into

* a similarity (translation, scale, rotation) fitted on landmarks that only move with the skull, estimated from
  22 points at once and therefore far less noisy, and
* the residual shape in that similarity's frame (expression, lips, blinks),

smooths each part with a One Euro filter (Casiez et al., CHI 2012: an exponential smoother whose cutoff rises
with speed, so slow drifts are smoothed and fast motion passes with little lag), and recombines them. Lips get a
much higher cutoff so that speech movements survive. Positions are measured in the face height of the track's
first frame (a fixed unit) and speeds in those heights per second, so the result does not depend on how large
the face is or where it sits in the image: a scaled and shifted copy of a track is smoothed into the same
scaled and shifted output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Landmarks that move with the skull but not with expression: eye corners, the nose ridge and base, the
# forehead midline and the face outline at eye height (mediapipe face-mesh indices). Brows, lips and the jaw
# are left out because they move when the person talks or emotes.
RIGID_LANDMARKS: tuple[int, ...] = (
    33, 133, 362, 263,  # eye corners
    168, 6, 197, 195, 5, 4, 1, 2, 98, 327,  # nose ridge, tip and base
    10, 151, 9, 8,  # forehead midline
    127, 356, 234, 454,  # face outline at eye height
)  # fmt: skip

# The 40 lip-contour points (outer and inner) of the mediapipe face mesh.
LIP_LANDMARKS: tuple[int, ...] = (
    0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181,
    185, 191, 267, 269, 270, 291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415,
)  # fmt: skip

# dt guards: a repeated or backwards timestamp must not divide by zero, and a long gap is no reason to trust
# a stale velocity.
MIN_DT_S = 1e-3
MAX_DT_S = 0.5


@dataclass(frozen=True)
class SmoothingConfig:
    """One Euro settings. Cutoffs in Hz; betas in Hz per (face height / s) of speed."""

    rigid_min_cutoff_hz: float = 2.0
    rigid_beta: float = 12.0
    rigid_d_cutoff_hz: float = 1.5  # speed estimate: fast enough for a head turn, steady enough on a still face
    shape_min_cutoff_hz: float = 1.0
    shape_beta: float = 20.0
    shape_d_cutoff_hz: float = 1.0
    lips_min_cutoff_hz: float = 10.0  # speech moves the lips at 2-8 Hz; keep them nearly raw

    def __post_init__(self) -> None:
        for name in ("rigid_min_cutoff_hz", "rigid_d_cutoff_hz", "shape_min_cutoff_hz", "shape_d_cutoff_hz",
                     "lips_min_cutoff_hz"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SmoothingConfig.{name} must be > 0, got {getattr(self, name)}")
        if self.rigid_beta < 0 or self.shape_beta < 0:
            raise ValueError("SmoothingConfig betas must be >= 0")


def _alpha(cutoff_hz: np.ndarray | float, dt_s: float) -> np.ndarray | float:
    """Smoothing factor of a first-order low-pass with this cutoff, sampled every dt_s seconds."""
    tau = 1.0 / (2.0 * math.pi * cutoff_hz)
    return 1.0 / (1.0 + tau / dt_s)


class OneEuroFilter:
    """Vectorised One Euro filter over arrays shaped (..., D).

    The speed that opens the filter is the norm over the last axis, so a 2-D point is filtered with one cutoff
    rather than one per axis. `min_cutoff_hz` may be an array broadcastable to (..., 1) for per-point settings.
    """

    def __init__(self, min_cutoff_hz: np.ndarray | float, beta: float, d_cutoff_hz: float) -> None:
        self.min_cutoff_hz = min_cutoff_hz
        self.beta = beta
        self.d_cutoff_hz = d_cutoff_hz
        self._x: np.ndarray | None = None
        self._dx: np.ndarray | None = None

    def reset(self) -> None:
        """Forget the state; the next sample is passed through unchanged."""
        self._x = None
        self._dx = None

    def __call__(self, x: np.ndarray, dt_s: float) -> np.ndarray:
        """Filter one sample taken dt_s seconds after the previous one."""
        if self._x is None or self._dx is None:
            self._x = np.array(x, dtype=np.float64)
            self._dx = np.zeros_like(self._x)
            return self._x.copy()
        dt_s = min(max(dt_s, MIN_DT_S), MAX_DT_S)
        self._dx += _alpha(self.d_cutoff_hz, dt_s) * ((x - self._x) / dt_s - self._dx)
        speed = np.linalg.norm(self._dx, axis=-1, keepdims=True)
        self._x += _alpha(self.min_cutoff_hz + self.beta * speed, dt_s) * (x - self._x)
        return self._x.copy()


def fit_similarity(src: np.ndarray, dst: np.ndarray) -> tuple[float, float, np.ndarray]:
    """Least-squares similarity dst ≈ s·R(theta)·src + t for (N, 2) point sets; returns (s, theta, t)."""
    src_mean = src.mean(axis=0)
    dst_mean = dst.mean(axis=0)
    a = src - src_mean
    b = dst - dst_mean
    norm = float((a * a).sum())
    cos_part = float((a * b).sum()) / norm
    sin_part = float((a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]).sum()) / norm
    scale = math.hypot(cos_part, sin_part)
    theta = math.atan2(sin_part, cos_part)
    rot = np.array([[cos_part, -sin_part], [sin_part, cos_part]])
    return scale, theta, dst_mean - rot @ src_mean


class LandmarkSmoother:
    """Smooths (N, 2) landmark sets over time as rigid motion plus residual shape (see the module docstring)."""

    def __init__(self, num_points: int, config: SmoothingConfig | None = None) -> None:
        self.config = config or SmoothingConfig()
        cfg = self.config
        self._rigid_idx = np.array(RIGID_LANDMARKS) if num_points > max(RIGID_LANDMARKS) else np.arange(num_points)
        shape_cutoff = np.full((num_points, 1), cfg.shape_min_cutoff_hz)
        lips = [i for i in LIP_LANDMARKS if i < num_points]
        shape_cutoff[lips] = cfg.lips_min_cutoff_hz
        # Rigid state: two 2-vectors, (tx, ty) and (log scale, angle), both as displacements in face heights
        # (half a face height is the lever arm that turns log-scale and radians into a displacement).
        self._rigid = OneEuroFilter(cfg.rigid_min_cutoff_hz, cfg.rigid_beta, cfg.rigid_d_cutoff_hz)
        self._shape = OneEuroFilter(shape_cutoff, cfg.shape_beta, cfg.shape_d_cutoff_hz)
        self._reference: np.ndarray | None = None  # (K, 2) rigid points of the first frame, face-height units
        self._height = 1.0  # the first frame's face height, pixels

    def reset(self) -> None:
        """Start over: the next frame is returned unsmoothed and becomes the reference shape."""
        self._rigid.reset()
        self._shape.reset()
        self._reference = None

    def update(self, points: np.ndarray, dt_s: float) -> np.ndarray:
        """Smooth one frame of (N, 2) pixel landmarks observed dt_s seconds after the previous one."""
        pts = np.asarray(points, dtype=np.float64)
        if self._reference is None:
            self._height = float(np.ptp(pts[:, 1])) or 1.0
            ref = pts[self._rigid_idx]
            self._reference = (ref - ref.mean(axis=0)) / self._height
        scale, theta, t = fit_similarity(self._reference, pts[self._rigid_idx])
        cos_t, sin_t = math.cos(theta), math.sin(theta)
        # Residual shape: undo the similarity, (N, 2) in face heights around the reference centroid.
        inv = np.array([[cos_t, sin_t], [-sin_t, cos_t]]) / scale
        residual = (pts - t) @ inv.T
        # Translation in face heights of the first frame (a fixed unit, so that neither where the face is nor
        # how its scale wobbles leaks into it), log-scale and angle as displacements at half a face height.
        rigid = np.array([t / self._height, [0.5 * math.log(scale), 0.5 * theta]])
        rigid_s = self._rigid(rigid, dt_s)
        residual_s = self._shape(residual, dt_s)
        scale_s = math.exp(2.0 * rigid_s[1, 0])
        theta_s = 2.0 * rigid_s[1, 1]
        fwd = scale_s * np.array([[math.cos(theta_s), -math.sin(theta_s)], [math.sin(theta_s), math.cos(theta_s)]])
        return residual_s @ fwd.T + rigid_s[0] * self._height
