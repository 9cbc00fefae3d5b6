"""Measures on frames and landmarks, written once for every evaluation: lip opening, background mask, PSNR,
correlation and sharpness."""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np

from livemood.face.regions import BROWS, LIDS, LIP_CORNERS

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # face-mesh landmarks on the inner lip line, at the midline
FOREHEAD_TOP, CHIN = 10, 152  # face-mesh landmarks spanning the face height, the lip opening's unit
BACKGROUND_GROW = 0.15  # face sizes (larger side of the landmark box) the hull is grown by before "background"
GROW_DIRECTIONS = 32  # the growth disc is approximated by a polygon with this many corners
LIP_SYNC_BAR = 0.95  # Pearson r of the lip openings (input vs output) at which lip sync counts as kept
MIN_LIP_FRAMES = 3  # frames with a face in both videos needed for a correlation
PSNR_PEAK = 255.0  # 8-bit pixels
MOTION_POINTS = list(BROWS + LIDS + LIP_CORNERS)  # where expressiveness is measured


def lip_opening(landmarks: np.ndarray) -> float:
    """Inner-lip gap over the face height, from (478, 2) landmarks in pixels."""
    pts = np.asarray(landmarks, dtype=np.float64)
    height = float(np.linalg.norm(pts[FOREHEAD_TOP] - pts[CHIN]))
    return float(np.linalg.norm(pts[UPPER_INNER_LIP] - pts[LOWER_INNER_LIP])) / max(height, 1e-6)


def background_mask(landmarks: np.ndarray, shape: tuple[int, ...], grow: float = BACKGROUND_GROW) -> np.ndarray:
    """(H, W) uint8, 255 outside the landmarks' convex hull grown by `grow` face sizes (a Minkowski sum with a
    disc, exact for the convex hull up to the disc's polygon), 0 on the face."""
    pts = np.asarray(landmarks, dtype=np.float64)[:, :2]
    radius = grow * float((pts.max(axis=0) - pts.min(axis=0)).max())
    angles = np.linspace(0.0, 2.0 * math.pi, GROW_DIRECTIONS, endpoint=False)
    # The disc polygon's corners lie on a slightly larger circle so that its edges stay outside `radius`.
    disc = radius / math.cos(math.pi / GROW_DIRECTIONS) * np.stack([np.cos(angles), np.sin(angles)], axis=1)
    hull = cv2.convexHull(pts.astype(np.float32))[:, 0]  # (K, 2)
    grown = cv2.convexHull((hull[:, None, :] + disc[None].astype(np.float32)).reshape(-1, 2))
    mask = np.full(shape[:2], 255, np.uint8)
    cv2.fillConvexPoly(mask, np.round(grown[:, 0] * 16).astype(np.int32), 0, lineType=cv2.LINE_8, shift=4)
    return mask


def expression_motion(shapes: np.ndarray, points: Sequence[int] = MOTION_POINTS) -> np.ndarray:
    """(F,) how far each frame's expression is from the video's neutral face: the RMS over `points` (the brows, lids
    and lip corners) of (F, 478, 2) face-unit shapes minus their per-coordinate median over the frames (the neutral
    face; robust to speech and to expressions held for less than half the video)."""
    if len(shapes) == 0:
        return np.zeros(0)
    points = shapes[:, list(points)]
    return np.sqrt(np.mean(np.square(points - np.median(points, axis=0)), axis=(1, 2)))


def expression_ratio(motion_source: np.ndarray, motion_output: np.ndarray) -> float | None:
    """Output / input RMS of two `expression_motion` series, None without motion in the input."""
    rms_src = float(np.sqrt(np.mean(motion_source**2))) if len(motion_source) else 0.0
    if rms_src == 0 or not len(motion_output):
        return None
    return float(np.sqrt(np.mean(motion_output**2))) / rms_src


def psnr(sse: float, count: int) -> float:
    """PSNR in dB of 8-bit pixels from their summed squared error; inf when identical, NaN for no pixels."""
    if count == 0:
        return math.nan
    mse = sse / count
    return math.inf if mse == 0 else 10.0 * math.log10(PSNR_PEAK**2 / mse)


def sharpness(grey: np.ndarray) -> float:
    """Variance of the Laplacian of a (H, W) grey image: fine detail (stubble, lashes) raises it, blur lowers it."""
    return float(cv2.Laplacian(grey, cv2.CV_64F).var())


def face_detail(frame: np.ndarray, landmarks: np.ndarray) -> float:
    """Variance of the Laplacian of a BGR frame's grey pixels inside the landmarks' convex hull, at the frame's
    own resolution (so a face pasted back from a smaller working crop scores lower than the original)."""
    hull = cv2.convexHull(np.asarray(landmarks, dtype=np.float32)[:, :2])[:, 0]
    x0, y0 = np.maximum(np.floor(hull.min(axis=0)).astype(int) - 1, 0)
    x1, y1 = np.ceil(hull.max(axis=0)).astype(int) + 2
    grey = cv2.cvtColor(frame[y0:y1, x0:x1], cv2.COLOR_BGR2GRAY)
    if grey.size == 0:
        return math.nan
    mask = np.zeros(grey.shape, np.uint8)
    cv2.fillConvexPoly(mask, np.round((hull - (x0, y0)) * 16).astype(np.int32), 255, lineType=cv2.LINE_8, shift=4)
    lap = cv2.Laplacian(grey, cv2.CV_64F)[mask > 0]
    return float(lap.var()) if lap.size else math.nan


def pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r, or None with too few points or a constant series (r undefined), unless the series are equal."""
    if len(a) < MIN_LIP_FRAMES:
        return None
    if np.array_equal(a, b):
        return 1.0
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(da @ da) * float(db @ db))
    return None if denom == 0 else float(da @ db) / denom
