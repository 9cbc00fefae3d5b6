"""The "warp" engine: emotions as FACS action units, applied as a smooth dense warp of the aligned face crop.

Each action unit (AU) is a few handles: a point on the face mesh (mean of some landmarks), a displacement and a
radius, all in face units (about the eye-to-eye distance) in the face's own upright frame, so an AU scales with the
face and turns with the head. An emotion is a weighted sum of AUs (EMFACS). The handles' Gaussian displacement
fields add up to one field on the crop, fading to zero at the face's edge; the crop is resampled through it and
pasted back with the face module's detail-preserving blend. Lip sync stays the speaker's: no handle sits on the
inner lips, so the mouth opening moves with the speaker, and only corners, cheeks, lids and brows are displaced.
"""

from __future__ import annotations

import functools
import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from livemood.config import Controls
from livemood.controls import Ramp
from livemood.face.align import WARP_CROP_SIZE, crop_transform, face_frame, transform_points, warp_crop
from livemood.face.blend import BlendConfig, face_mask, paste_back
from livemood.face.tracker import Face

log = logging.getLogger(__name__)

AU_GAIN = 1.5  # face units per unit of AU weight: intensity 1 gives a strong but natural expression
FIELD_SIZE = 48  # the displacement field is computed on this grid over the crop, then enlarged (it is smooth)
MIN_JACOBIAN = 0.35  # the backward map's Jacobian determinant stays above this: no folds, no extreme stretch
# The field fades out over the face's outer rim: 0.12 of the crop's half side is about 0.27 face units. A wider
# feather reaches the lip corners, cheeks and eyes and weakens them, most on the far side of a turned head.
FIELD_MASK = BlendConfig(grow=0.02, feather=0.12)
PASTE_MASK = BlendConfig(grow=0.03, feather=0.08)


@dataclass(frozen=True)
class Handle:
    """Moves the neighbourhood of one point: on both sides of the face (mirrored) unless `one_side`.

    `right`/`left` are landmark groups on the subject's right (image left for a frontal face) and left; their
    mean is the handle's centre. `dx` is outwards (away from the midline), `dy` downwards, `sigma` the Gaussian
    radius; all in face units.
    """

    right: tuple[int, ...]
    left: tuple[int, ...]
    dx: float
    dy: float
    sigma: float
    one_side: bool = False  # True: the left side only (asymmetric AUs such as contempt's dimpler)


# Landmark groups of the mediapipe face mesh (subject's right, subject's left).
INNER_BROW = ((107, 55, 65), (336, 285, 295))
MID_BROW = ((105, 52), (334, 282))
OUTER_BROW = ((70, 46, 63), (300, 276, 293))
UPPER_LID = ((159, 158, 160), (386, 385, 387))
LOWER_LID = ((145, 153, 144), (374, 380, 373))
CHEEK = ((205, 50), (425, 280))
NOSE_WING = ((98, 129), (327, 358))
LIP_CORNER = ((61, 146, 185), (291, 375, 409))
# Just outside the lip corners, where the corner muscles meet: pulling here curves the lips less than pulling the
# corner itself, so the re-tracked mouth opening stays closer to the speaker's.
MODIOLUS = ((57, 212), (287, 432))
UNDER_EYE = ((118, 119), (347, 348))  # the lower lid's cheek side, which a smile pushes up
MOUTH_CORNERS = (61, 291)  # outer lip corners
UPPER_LIP_TOP, LOWER_LIP_BOTTOM = 0, 17  # outer lip line at the midline
MOUTH_LOCK_MARGIN = 0.15  # face units beyond the lips over which the lock fades out

ACTION_UNITS: dict[str, tuple[Handle, ...]] = {
    "AU1 inner brow raiser": (
        Handle(*INNER_BROW, dx=0.0, dy=-0.2, sigma=0.26),
        Handle(*OUTER_BROW, dx=0.0, dy=0.04, sigma=0.2),  # the oblique "sad brow": outer ends stay or drop
    ),
    "AU2 outer brow raiser": (
        Handle(*OUTER_BROW, dx=0.0, dy=-0.24, sigma=0.28),
        Handle(*MID_BROW, dx=0.0, dy=-0.14, sigma=0.24),
    ),
    "AU4 brow lowerer": (  # the corrugator pulls the brows down and together, bunching the skin between them
        Handle(*INNER_BROW, dx=-0.1, dy=0.14, sigma=0.24),
        Handle(*MID_BROW, dx=-0.08, dy=0.09, sigma=0.22),
    ),
    "AU5 upper lid raiser": (
        Handle(*UPPER_LID, dx=0.0, dy=-0.085, sigma=0.1),
        Handle(*LOWER_LID, dx=0.0, dy=0.025, sigma=0.08),
    ),
    "AU6 cheek raiser": (  # the Duchenne marker: cheeks up, lower lids pushed up, the brows' outer ends drawn down
        Handle(*CHEEK, dx=0.03, dy=-0.13, sigma=0.3),
        Handle(*UNDER_EYE, dx=0.0, dy=-0.06, sigma=0.14),
        Handle(*LOWER_LID, dx=0.0, dy=-0.06, sigma=0.1),
        Handle(*OUTER_BROW, dx=0.0, dy=0.04, sigma=0.2),
    ),
    "AU7 lid tightener": (
        Handle(*LOWER_LID, dx=0.0, dy=-0.05, sigma=0.09),
        Handle(*UPPER_LID, dx=0.0, dy=0.02, sigma=0.08),
    ),
    "AU9 nose wrinkler": (Handle(*NOSE_WING, dx=0.0, dy=-0.09, sigma=0.16),),
    "AU12 lip corner puller": (Handle(*MODIOLUS, dx=0.22, dy=-0.2, sigma=0.26),),
    "AU14 dimpler": (Handle(*LIP_CORNER, dx=0.04, dy=-0.04, sigma=0.16),),
    "AU15 lip corner depressor": (Handle(*MODIOLUS, dx=0.0, dy=0.12, sigma=0.22),),
    "AU20 lip stretcher": (Handle(*LIP_CORNER, dx=0.15, dy=0.03, sigma=0.24),),
    "AU23 lip tightener": (Handle(*MODIOLUS, dx=-0.07, dy=0.0, sigma=0.2),),
    "AU12 left lip corner puller": (Handle(*LIP_CORNER, dx=0.12, dy=-0.16, sigma=0.24, one_side=True),),
    "AU14 left dimpler": (Handle(*LIP_CORNER, dx=0.05, dy=-0.04, sigma=0.15, one_side=True),),
}
AU_NAMES = tuple(ACTION_UNITS)

# EMFACS prototypes, without the jaw drop (AU26/27) that would fight the speaker's own lip movements.
EMOTION_AUS: dict[str, dict[str, float]] = {
    "neutral": {},
    "happy": {"AU6 cheek raiser": 1.0, "AU12 lip corner puller": 1.0},
    "sad": {"AU1 inner brow raiser": 1.0, "AU4 brow lowerer": 0.5, "AU15 lip corner depressor": 1.0},
    "angry": {"AU4 brow lowerer": 1.2, "AU5 upper lid raiser": 0.4, "AU7 lid tightener": 1.0,
              "AU23 lip tightener": 1.0},
    # Surprise's jaw drop stays the speaker's; narrowing the corners rounds the mouth without opening it.
    "surprised": {"AU1 inner brow raiser": 1.0, "AU2 outer brow raiser": 1.0, "AU5 upper lid raiser": 1.0,
                  "AU23 lip tightener": 0.8},
    "fearful": {"AU1 inner brow raiser": 1.0, "AU2 outer brow raiser": 0.7, "AU4 brow lowerer": 0.6,
                "AU5 upper lid raiser": 1.0, "AU20 lip stretcher": 1.0},
    "disgusted": {"AU9 nose wrinkler": 1.0, "AU4 brow lowerer": 0.5, "AU15 lip corner depressor": 0.6},
    "contempt": {"AU12 left lip corner puller": 1.0, "AU14 left dimpler": 1.0},
}


MAX_AU_WEIGHT = max(w for recipe in EMOTION_AUS.values() for w in recipe.values())


def au_vector(controls: Controls) -> np.ndarray:
    """The target AU weights for these controls: the emotion's recipe times its intensity, zero when bypassed."""
    target = np.zeros(len(AU_NAMES))
    if not controls.bypass:
        for name, weight in EMOTION_AUS[controls.emotion].items():
            target[AU_NAMES.index(name)] = weight * controls.intensity
    return target


def _handle_table(landmarks: np.ndarray, weights: np.ndarray, unit: float, yaw_deg: float
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Centres (K, 2), displacements (K, 2) and radii (K,) in crop pixels for the AUs with non-zero weight."""
    centres, moves, sigmas = [], [], []
    squash = math.cos(math.radians(yaw_deg))  # sideways moves foreshorten as the head turns
    for weight, name in zip(weights, AU_NAMES, strict=True):
        if abs(weight) < 1e-3:
            continue
        for h in ACTION_UNITS[name]:
            sides = ((h.left, 1.0),) if h.one_side else ((h.right, -1.0), (h.left, 1.0))
            for group, outward in sides:
                centres.append(landmarks[list(group)].mean(axis=0))
                gain = AU_GAIN * weight * unit
                moves.append((gain * h.dx * outward * squash, gain * h.dy))
                sigmas.append(unit * h.sigma)
    return np.array(centres).reshape(-1, 2), np.array(moves).reshape(-1, 2), np.array(sigmas)


def displacement_field(landmarks: np.ndarray, weights: np.ndarray, yaw_deg: float, size: int) -> np.ndarray:
    """(size, size, 2) float32 forward displacement in crop pixels for landmarks (478, 2) in crop pixels.

    Computed on a FIELD_SIZE grid, masked to the face, scaled down if it would fold, then enlarged.
    """
    unit = face_frame(landmarks).unit
    centres, moves, sigmas = _handle_table(landmarks, weights, unit, yaw_deg)
    step = size / FIELD_SIZE
    grid = (np.arange(FIELD_SIZE) + 0.5) * step - 0.5  # crop pixel centres of the coarse cells
    gx, gy = np.meshgrid(grid, grid)
    field = np.zeros((FIELD_SIZE, FIELD_SIZE, 2))
    for (cx, cy), move, sigma in zip(centres, moves, sigmas, strict=True):
        g = np.exp(-((gx - cx) ** 2 + (gy - cy) ** 2) / (2.0 * sigma**2))
        field += g[..., None] * move
    field *= face_mask(landmarks / step, FIELD_SIZE, FIELD_MASK)[..., None]
    _lock_mouth_opening(field, gx, gy, landmarks, unit)
    # Backward map p - d(p): its Jacobian is I - ∇d; keep its determinant above MIN_JACOBIAN everywhere.
    dxx, dxy = np.gradient(field[..., 0], step)[::-1]
    dyx, dyy = np.gradient(field[..., 1], step)[::-1]
    det = (1.0 - dxx) * (1.0 - dyy) - dxy * dyx
    worst = float(det.min()) if det.size else 1.0
    if worst < MIN_JACOBIAN:
        # det is quadratic in a uniform scale s of the field; shrinking it by (1 - MIN) / (1 - worst) is enough
        # for the linear part and leaves margin for the quadratic one.
        field *= (1.0 - MIN_JACOBIAN) / (1.0 - worst)
        log.debug("displacement field scaled by %.2f to stay fold-free", (1.0 - MIN_JACOBIAN) / (1.0 - worst))
    return cv2.resize(field.astype(np.float32), (size, size), interpolation=cv2.INTER_LINEAR)


def _lock_mouth_opening(field: np.ndarray, gx: np.ndarray, gy: np.ndarray, landmarks: np.ndarray, unit: float
                        ) -> None:
    """Give both lips the same vertical move, column by column, so the mouth opening stays the speaker's.

    Over the mouth (flat-topped weight, fading out MOUTH_LOCK_MARGIN face units beyond the lips) the field's
    vertical component is replaced by its value on the line through the mouth's centre. In place, (G, G, 2).
    """
    left, right = landmarks[MOUTH_CORNERS[0]], landmarks[MOUTH_CORNERS[1]]
    top, bottom = landmarks[UPPER_LIP_TOP], landmarks[LOWER_LIP_BOTTOM]
    cx, cy = 0.5 * (left[0] + right[0]), 0.5 * (top[1] + bottom[1])
    half_w = 0.5 * abs(right[0] - left[0]) + MOUTH_LOCK_MARGIN * unit
    half_h = 0.5 * abs(bottom[1] - top[1]) + MOUTH_LOCK_MARGIN * unit
    weight = np.exp(-(((gx - cx) / half_w) ** 4) - ((gy - cy) / half_h) ** 4)
    rows = gy[:, 0]
    k = int(np.clip(np.searchsorted(rows, cy), 1, len(rows) - 1))
    frac = (cy - rows[k - 1]) / (rows[k] - rows[k - 1])
    centre_dy = (1.0 - frac) * field[k - 1, :, 1] + frac * field[k, :, 1]  # (G,) vertical move on the centre line
    field[..., 1] = (1.0 - weight) * field[..., 1] + weight * centre_dy[None, :]


@functools.cache
def _pixel_grid(w: int, h: int) -> tuple[np.ndarray, np.ndarray]:
    """(h, w) float32 x and y pixel coordinates, built once per crop size."""
    return np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))


def warp_by_field(crop: np.ndarray, field: np.ndarray) -> np.ndarray:
    """Resample the crop so that content at p moves to p + field(p) (backward map with one fixed-point step)."""
    h, w = field.shape[:2]
    xs, ys = _pixel_grid(w, h)
    # The inverse of p → p + d(p) is q → q - d(q - d(q)) to second order for a smooth, small d.
    first = cv2.remap(field, xs - field[..., 0], ys - field[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return cv2.remap(crop, xs - first[..., 0], ys - first[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


class WarpEngine:
    """Weight-free expression engine: works on any CPU, needs the tracked face, not audio."""

    name = "warp"
    needs_face = True
    needs_audio = False

    def __init__(self, crop_size: int = WARP_CROP_SIZE) -> None:
        self.crop_size = crop_size
        # The largest AU weight in any recipe goes from 0 to full in RAMP_TIME_S: no switch ever pops.
        self.ramp = Ramp(len(AU_NAMES), full_scale=MAX_AU_WEIGHT)

    def process(self, frame: np.ndarray, face: Face | None, audio: np.ndarray | None, controls: Controls
                ) -> np.ndarray:
        if face is None:
            return frame
        weights = self.ramp.step(au_vector(controls), face.timestamp_ms, controls.ramp_s)
        if np.abs(weights).max() < 1e-3 or face.presence <= 0.0:
            return frame
        m = crop_transform(face, self.crop_size)
        crop = warp_crop(frame, m, self.crop_size)
        landmarks = transform_points(m, face.landmarks)
        field = displacement_field(landmarks, weights, face.pose.yaw, self.crop_size)
        warped = warp_by_field(crop, field)
        mask = face_mask(landmarks, self.crop_size, PASTE_MASK)
        return paste_back(frame, warped, m, mask, presence=face.presence, source=crop, config=PASTE_MASK)

    def close(self) -> None:
        pass
