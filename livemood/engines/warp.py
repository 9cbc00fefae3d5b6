"""The "warp" engine: emotions as real actors' landmark moves, applied as a smooth, fold-free warp of the frame.

Per frame:

1. Recipe. Each emotion is a move of every face-mesh landmark in face units (about the eye-to-eye distance) in
   the face's own upright frame, measured on real actors (`recipes.json`, fitted by `tools/fit_recipes.py` from
   paired neutral / emotion takes, with the head's pose and the jaw's opening taken out). The ramped emotion
   weights (emotion x intensity) mix them; sideways moves shrink with the head's yaw.
2. Lip sync. The mouth's opening stays the speaker's: the inner lips get the same vertical move column by column.
   Surprised and fearful may open the jaw *in proportion to the speaker's own opening* (x `jaw` at intensity 1):
   a closed mouth stays closed and the timing is the speaker's.
3. Field. The landmark moves are spread into a dense velocity field on a coarse grid over the face (normalised
   Gaussian splatting: each grid cell takes the weighted mean of nearby moves, fading to zero away from the
   landmarks), pinned to zero on the face outline and the irises, masked to the face. The warp is the field's
   exponential (scaling and squaring), a diffeomorphism at any strength: it never folds, so intensity can mean what
   it says up to 1 and beyond, with no global scale-down.
4. Warp at full resolution. The coarse backward map is carried into frame pixels and the frame itself is resampled
   once, only inside the face's box: fine detail (stubble, lashes, catchlights) moves with the skin instead of
   being replaced by an upsampled crop, and pixels where the field is zero are bit-identical.
"""

from __future__ import annotations

import functools
import json
import logging
import math
from pathlib import Path

import cv2
import numpy as np

from livemood.config import EMOTIONS, Controls
from livemood.controls import Ramp
from livemood.engines.expressiveness import NeutralFace
from livemood.face.align import Affine, crop_transform, face_frame, transform_points
from livemood.face.blend import BlendConfig, face_mask
from livemood.face.tracker import Face

log = logging.getLogger(__name__)

RECIPES_FILE = Path(__file__).with_name("recipes.json")
GRID = 80  # cells per side of the coarse field over the face crop (the field is smooth)
SPLAT_SIGMA = 0.14  # face units: the Gaussian radius each landmark's move spreads over
# A landmark's own weight is 1 at its centre; w0 = this fraction of it is the "no move" vote every cell also gets,
# so the field falls to zero where landmarks are sparse or absent instead of extrapolating their moves.
EMPTY_WEIGHT = 0.05
MOVE_GAIN = 1.5
SHADE_GAIN = 0.25  # brightness change per unit of area change
SHADE_RANGE = (0.9, 1.0)  # darkest and brightest factor
REFINE = 3  # rounds of splatting the residual: the field then meets the landmarks' own moves, not a blur of them
SQUARINGS = 6  # the velocity is divided by 2^6 and the small map composed with itself 6 times
NO_MOVE = 1e-3  # grid cells (about 1/1000 of the face): smaller moves are none, so those pixels stay bit-identical
# The field is masked to the face hull grown by a little (so the outline's neighbourhood can move) and faded out
# over its rim (fractions of the crop's half side; the crop spans about 4.5 face units).
FIELD_MASK = BlendConfig(grow=0.02, feather=0.1)
OUTLINE = (10, 338, 297, 332, 284, 251, 389, 356, 454, 323, 361, 288, 397, 365, 379, 378, 400, 377, 152, 148, 176,
           149, 150, 136, 172, 58, 132, 93, 234, 127, 162, 21, 54, 103, 67, 109)  # face-mesh face oval
IRISES = tuple(range(468, 478))
PINNED = np.array(OUTLINE + IRISES)  # never moved: the face keeps its outline, the eyes their gaze
# Inner-lip landmarks facing each other across the mouth, from the right corner to the left one.
UPPER_INNER = (191, 80, 81, 82, 13, 312, 311, 310, 415)
LOWER_INNER = (95, 88, 178, 87, 14, 317, 402, 318, 324)
MOUTH_CORNERS = (61, 291)  # outer lip corners
UPPER_LIP_TOP, LOWER_LIP_BOTTOM, CHIN = 0, 17, 152
MOUTH_LOCK_MARGIN = 0.25  # face units beyond the lips over which the opening lock fades out
JAW_WIDTH = 0.9  # face units: half-width of the part of the jaw that drops with the opening (the midline most)
JAW_FADE = 0.6  # face units below the chin over which the drop fades out (into the neck)
FREE = np.setdiff1d(np.arange(468), PINNED)  # landmarks that carry recipe moves


@functools.cache
def recipes() -> tuple[np.ndarray, np.ndarray]:
    """(E, 478, 2) landmark moves in face units at intensity 1 and (E,) jaw factors, in `config.EMOTIONS` order
    (neutral: none)."""
    data = json.loads(RECIPES_FILE.read_text())["recipes"]
    moves = np.zeros((len(EMOTIONS), 478, 2))
    jaws = np.ones(len(EMOTIONS))
    for k, emotion in enumerate(EMOTIONS):
        if emotion in data:
            moves[k] = np.asarray(data[emotion]["move"], dtype=np.float64)
            jaws[k] = float(data[emotion]["jaw"])
    moves[:, PINNED] = 0.0
    return moves, jaws


def emotion_weights(controls: Controls) -> np.ndarray:
    """(E,) target weights: the chosen emotion at its intensity, zero when bypassed."""
    target = np.zeros(len(EMOTIONS))
    if not controls.bypass:
        target[EMOTIONS.index(controls.emotion)] = controls.intensity
    return target


def landmark_moves(weights: np.ndarray, yaw_deg: float) -> tuple[np.ndarray, float]:
    """(478, 2) moves in face units for these emotion weights, and the jaw factor (1 = the speaker's opening)."""
    moves, jaws = recipes()
    move = MOVE_GAIN * np.tensordot(weights, moves, axes=1)
    move[:, 0] *= math.cos(math.radians(yaw_deg))  # sideways moves foreshorten as the head turns
    return move, 1.0 + float(weights @ (jaws - 1.0))


def _lock_inner_lips(move: np.ndarray) -> None:
    """Both inner lips of each column get their mean vertical move: the opening stays the speaker's. In place."""
    up, low = list(UPPER_INNER), list(LOWER_INNER)
    mean = 0.5 * (move[up, 1] + move[low, 1])
    move[up, 1] = mean
    move[low, 1] = mean


class _Splat:
    """Gaussian-blurred bilinear splats onto the grid of values at fixed points (N, 2) in grid cells: the cells and
    weights of the points' corners are worked out once for all the refinement rounds."""

    def __init__(self, points: np.ndarray, sigma: float) -> None:
        x0, y0 = np.floor(points[:, 0]).astype(int), np.floor(points[:, 1]).astype(int)
        fx, fy = points[:, 0] - x0, points[:, 1] - y0
        cells, weights, rows = [], [], []
        for dx, dy, w in ((0, 0, (1 - fx) * (1 - fy)), (1, 0, fx * (1 - fy)), (0, 1, (1 - fx) * fy), (1, 1, fx * fy)):
            xs, ys = x0 + dx, y0 + dy
            ok = (xs >= 0) & (xs < GRID) & (ys >= 0) & (ys < GRID)
            cells.append(ys[ok] * GRID + xs[ok])
            weights.append(w[ok])
            rows.append(np.flatnonzero(ok))
        self._cells, self._weights, self._rows = (np.concatenate(v) for v in (cells, weights, rows))
        self._sigma = sigma
        self.weight = self(np.ones((len(points), 1)))[..., 0]  # (GRID, GRID): the splatted weight

    def __call__(self, values: np.ndarray) -> np.ndarray:
        """(GRID, GRID, C) float32 from values (N, C)."""
        spread = values[self._rows] * self._weights[:, None]
        acc = np.stack([np.bincount(self._cells, spread[:, c], GRID * GRID) for c in range(values.shape[1])], axis=1)
        # An unnormalised Gaussian (peak 1 for a single point), so the weights compare with EMPTY_WEIGHT.
        blurred = cv2.GaussianBlur(acc.reshape(GRID, GRID, -1).astype(np.float32), (0, 0), self._sigma,
                                   borderType=cv2.BORDER_CONSTANT)
        return blurred.reshape(GRID, GRID, -1) * np.float32(2 * math.pi * self._sigma**2)


def velocity_field(landmarks: np.ndarray, move: np.ndarray, unit: float) -> np.ndarray:
    """(GRID, GRID, 2) float32 velocity in grid cells from landmarks (478, 2) in grid cells and their moves in
    face units (pinned landmarks move by zero)."""
    points = np.concatenate([landmarks[FREE], landmarks[PINNED]])
    values = np.concatenate([move[FREE], np.zeros((len(PINNED), 2))]) * unit
    splat = _Splat(points, SPLAT_SIGMA * unit)
    gain = face_mask(landmarks, GRID, FIELD_MASK)[..., None] / (splat.weight[..., None] + EMPTY_WEIGHT)
    field = np.zeros((GRID, GRID, 2), np.float32)
    at_x, at_y = points[:, 0].astype(np.float32)[None], points[:, 1].astype(np.float32)[None]
    for _ in range(REFINE):  # each round spreads what the field still misses at the landmarks
        residual = values - _sample(field, at_x, at_y)[0]
        field += gain * splat(residual)
    _lock_mouth_band(field, landmarks, unit)
    return field


def _lock_mouth_band(field: np.ndarray, landmarks: np.ndarray, unit: float) -> None:
    """Over the mouth (flat-topped weight, fading out MOUTH_LOCK_MARGIN beyond the lips) the vertical component
    becomes its value on the line through the mouth's centre, column by column: the splatted field between the
    lips then moves both lips alike. In place, (GRID, GRID, 2)."""
    left, right = landmarks[MOUTH_CORNERS[0]], landmarks[MOUTH_CORNERS[1]]
    top, bottom = landmarks[UPPER_LIP_TOP], landmarks[LOWER_LIP_BOTTOM]
    cx, cy = 0.5 * (left[0] + right[0]), 0.5 * (landmarks[13][1] + landmarks[14][1])
    half_w = 0.5 * abs(right[0] - left[0]) + MOUTH_LOCK_MARGIN * unit
    half_h = 0.5 * abs(bottom[1] - top[1]) + MOUTH_LOCK_MARGIN * unit
    gx, gy = _cells(GRID)
    weight = np.exp(-(((gx - cx) / half_w) ** 4) - ((gy - cy) / half_h) ** 4)
    k = int(np.clip(math.floor(cy), 0, GRID - 2))
    frac = float(np.clip(cy - k, 0.0, 1.0))
    centre_dy = (1.0 - frac) * field[k, :, 1] + frac * field[k + 1, :, 1]  # (GRID,)
    field[..., 1] = (1.0 - weight) * field[..., 1] + weight * centre_dy[None, :]


@functools.cache
def _cells(n: int) -> tuple[np.ndarray, np.ndarray]:
    """(n, n) float32 x and y coordinates of a grid's cells."""
    return np.meshgrid(np.arange(n, dtype=np.float32), np.arange(n, dtype=np.float32))


def _sample(field: np.ndarray, at_x: np.ndarray, at_y: np.ndarray) -> np.ndarray:
    return cv2.remap(field, at_x, at_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT)


def exponential_backward(velocity: np.ndarray) -> np.ndarray:
    """(G, G, 2) backward displacement b of the warp exp(velocity): output cell q shows the input at q + b(q).

    Scaling and squaring: the map x -> x - v(x) / 2^n is a diffeomorphism for any smooth v once n is large enough,
    and composing it with itself n times gives exp(-v), the exact inverse of the forward flow exp(v). A composition
    of diffeomorphisms cannot fold."""
    gx, gy = _cells(velocity.shape[0])
    b = (-velocity / float(1 << SQUARINGS)).astype(np.float32)
    for _ in range(SQUARINGS):
        b = b + _sample(b, gx + b[..., 0], gy + b[..., 1])
    return b


def jaw_backward(landmarks: np.ndarray, drop: float, unit: float) -> np.ndarray:
    """(GRID, GRID, 2) backward displacement that lowers the lower lip and the chin by `drop` grid cells (most at
    the midline, less towards the corners), stretching the gap between the lips and fading out into the neck."""
    gx, gy = _cells(GRID)
    upper = landmarks[list(UPPER_INNER), 1].mean()
    lower = landmarks[list(LOWER_INNER), 1].mean() + drop  # where the lower lip lands
    chin = landmarks[CHIN, 1] + drop
    cx = 0.5 * (landmarks[MOUTH_CORNERS[0], 0] + landmarks[MOUTH_CORNERS[1], 0])
    across = np.clip(1.0 - ((gx - cx) / (JAW_WIDTH * unit)) ** 2, 0.0, 1.0) ** 2  # zero beyond JAW_WIDTH
    down = np.clip((gy - upper) / max(lower - upper, 1e-3), 0.0, 1.0)  # 0 above the gap, 1 from the lower lip
    down *= np.clip(1.0 - (gy - chin) / (JAW_FADE * unit), 0.0, 1.0)  # fades below the chin
    b = np.zeros((GRID, GRID, 2), np.float32)
    b[..., 1] = -drop * across * down
    return b


def support_box(backward: np.ndarray, m: Affine, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """(x0, y0, x1, y1) frame pixels covering every grid cell where the backward map moves anything (plus one
    cell), clipped to the frame; None when it moves nothing."""
    rows, cols = np.nonzero(np.abs(backward).max(axis=2) > 0)
    if rows.size == 0:
        return None
    corners = np.array([[cols.min() - 1.5, rows.min() - 1.5], [cols.max() + 1.5, rows.min() - 1.5],
                        [cols.min() - 1.5, rows.max() + 1.5], [cols.max() + 1.5, rows.max() + 1.5]])
    back = transform_points(cv2.invertAffineTransform(np.asarray(m, dtype=np.float64)), corners)
    h, w = frame_shape[:2]
    x0, y0 = (max(0, math.floor(v)) for v in back.min(axis=0))
    x1, y1 = (min(n, math.ceil(v) + 1) for v, n in zip(back.max(axis=0), (w, h), strict=True))
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def compression_shade(backward: np.ndarray) -> np.ndarray:
    """(G, G) float32 brightness factor: skin pushed together (more input area per output area, where folds form:
    the nasolabial fold of a smile, the bunched brows of anger) darkens, stretched skin lightens a little; 1 where
    nothing moves."""
    (bxy, bxx), (byy, byx) = np.gradient(backward[..., 0]), np.gradient(backward[..., 1])
    area = (1.0 + bxx) * (1.0 + byy) - bxy * byx  # input area per output area
    shade = np.clip(1.0 - SHADE_GAIN * (area - 1.0), *SHADE_RANGE).astype(np.float32)
    shade[np.abs(shade - 1.0) < NO_MOVE] = 1.0
    return shade


def warp_frame(frame: np.ndarray, backward: np.ndarray, m: Affine, box: tuple[int, int, int, int]) -> np.ndarray:
    """The frame resampled through a backward displacement (GRID, GRID, 2) given on the grid that affine `m` maps
    frame pixels onto, shaded by `compression_shade`; only `box` is touched, the rest is the frame's own pixels (a
    new array)."""
    x0, y0, x1, y1 = box
    m = np.asarray(m, dtype=np.float64)
    a = m[:, :2]
    to_grid = np.hstack([a, (m[:, 2] + a @ (x0, y0))[:, None]])  # box pixel -> grid cell
    # Done on the coarse grid, where it is cheap: grid cells -> frame pixels (a linear map, so it commutes with the
    # upsampling) plus the box's corner (remap's relative map below is relative to the box's own pixels and reads
    # the whole frame). Outside the grid: the corner, and no shade.
    size, flags = (x1 - x0, y1 - y0), cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP
    moves = backward @ np.linalg.inv(a).T.astype(np.float32) + np.float32((x0, y0))
    offsets = cv2.warpAffine(moves, to_grid, size, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                             borderValue=(x0, y0))
    shade = cv2.warpAffine(compression_shade(backward), to_grid, size, flags=flags, borderMode=cv2.BORDER_CONSTANT,
                           borderValue=1.0)
    # Bicubic: a moved pixel keeps more of its fine detail than bilinear gives; where b is zero both are exact.
    warped = cv2.remap(frame, offsets, None, cv2.INTER_CUBIC | cv2.WARP_RELATIVE_MAP,
                       borderMode=cv2.BORDER_REPLICATE)
    out = frame.copy()
    # Rounded and saturated by OpenCV; a factor of exactly 1 (everywhere nothing is shaded) returns the pixel.
    out[y0:y1, x0:x1] = cv2.multiply(warped, cv2.merge([shade, shade, shade]), dtype=cv2.CV_8U)
    return out


class WarpEngine:
    """Weight-free expression engine: works on any CPU, needs the tracked face, not audio."""

    name = "warp"
    needs_face = True
    needs_audio = False

    def __init__(self) -> None:
        recipes()  # read once, at start: a broken install fails here, not mid-call
        self.ramp = Ramp(len(EMOTIONS))  # an emotion's weight goes from 0 to 1 in the ramp time
        self.expressiveness = Ramp(1)  # the speaker's own expressions' scale, from 1
        self.expressiveness.value[:] = 1.0
        self.neutral = NeutralFace()
        self._neutral_takes = 0

    def backward_field(self, face: Face, weights: np.ndarray, own: np.ndarray | None = None
                       ) -> tuple[np.ndarray, Affine]:
        """The backward displacement (GRID, GRID, 2) for these emotion weights plus `own` (478, 2) face-unit moves
        of the speaker's own expression (expressiveness), and the frame -> grid affine."""
        m = crop_transform(face, GRID)
        landmarks = transform_points(m, face.landmarks)
        unit = face_frame(landmarks).unit  # grid cells per face unit
        move, jaw = landmark_moves(weights, face.pose.yaw)
        if own is not None:
            move = move + own
        _lock_inner_lips(move)
        backward = exponential_backward(face.presence * velocity_field(landmarks, move, unit))
        opening = float(np.linalg.norm(landmarks[13] - landmarks[14]))  # grid cells, the speaker's own
        drop = face.presence * (jaw - 1.0) * opening
        if drop > 0.01:
            gx, gy = _cells(GRID)
            jaw_b = jaw_backward(landmarks, drop, unit)
            # Undo the expression, then the jaw: b(q) = b_expr(q) + b_jaw(q + b_expr(q)).
            backward = backward + _sample(jaw_b, gx + backward[..., 0], gy + backward[..., 1])
        backward[np.abs(backward) < NO_MOVE] = 0.0  # exactly still where it hardly moves: those pixels stay the frame's
        return backward, m

    def process(self, frame: np.ndarray, face: Face | None, audio: np.ndarray | None, controls: Controls
                ) -> np.ndarray:
        if face is None:
            return frame
        ts = face.timestamp_ms
        weights = self.ramp.step(emotion_weights(controls), ts, controls.ramp_s)
        scale = float(self.expressiveness.step(np.array([controls.expressiveness]), ts, controls.ramp_s)[0]) - 1.0
        points = face.points
        self.neutral.observe(points, ts)  # always: the neutral face settles before it is used
        if controls.neutral_takes != self._neutral_takes:
            self._neutral_takes = controls.neutral_takes
            self.neutral.retake(points)
        own = self.neutral.move(points, scale, ts) if abs(scale) > 1e-3 else None
        if (np.abs(weights).max() < 1e-3 and own is None) or face.presence <= 0.0:
            return frame
        backward, m = self.backward_field(face, weights, own)
        box = support_box(backward, m, frame.shape)
        return frame if box is None else warp_frame(frame, backward, m, box)

    def close(self) -> None:
        pass
