"""Aligned face crops: affine maps from frame pixels to crop pixels, the warps, and their exact inverses.

Everything is expressed as a 2x3 affine `M` taking a frame pixel (x, y) to a crop pixel, with OpenCV's pixel
convention (pixel j covers [j - 0.5, j + 0.5]). A crop is `warp_crop(frame, M, size)`; pasting back uses
`invert_affine(M)`, so a crop and its paste-back always agree exactly.

Crops are placed in the face's own frame, built from landmarks that move with the skull only (eye corners and
the nose base), so smiling, talking or raising the brows does not move or rescale the crop:

* origin: the midpoint between the eye centres;
* down axis: perpendicular to the average of the eye line and the (rotated) eye-to-nose-base line;
* unit: the root mean square of the eye-to-eye and eye-to-nose-base distances, which shrinks far less under
  yaw or pitch than either distance alone.

In these units the face-mesh extent runs from about -1.05 (forehead top) to +2.1 (chin) along the down axis and
about +/-1.3 across (measured on face-mesh output; it varies by +/-0.1 between people and with pose).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from livemood.face.tracker import Face

Affine = np.ndarray  # (2, 3) float64: [crop_x, crop_y]ᵀ = M @ [frame_x, frame_y, 1]ᵀ

RIGHT_EYE = (33, 133)  # outer and inner corner of the subject's right eye (left in the image)
LEFT_EYE = (362, 263)
NOSE_BASE = 2  # subnasale
# Landmarks fixed to the skull: eye corners, the nose from bridge to tip, the temples beside the eyes.
SKULL = (33, 133, 362, 263, 168, 6, 197, 195, 5, 4, 1, 127, 356, 234, 454, 139, 368)

WARP_CROP_SIZE = 256  # pixels, the warp engine's working size
WAV2LIP_CROP_SIZE = 96  # pixels, Wav2Lip's generator input
MAX_SHRINK = 8  # warp_crop box-averages the frame by at most this factor before sampling


@dataclass(frozen=True)
class FaceFrame:
    """The face's own coordinate frame in frame pixels (see the module docstring)."""

    origin: np.ndarray  # (2,) eye midpoint
    x_axis: np.ndarray  # (2,) unit, towards the image's right for an upright face
    y_axis: np.ndarray  # (2,) unit, down the face
    unit: float  # pixels per face unit

    def units(self, vectors: np.ndarray) -> np.ndarray:
        """(N, 2) vectors (offsets) in pixels as vectors in this frame's face units."""
        return np.stack([vectors @ self.x_axis, vectors @ self.y_axis], axis=1) / self.unit


@dataclass(frozen=True)
class CropConfig:
    """A square crop around the whole face, rotated upright. Lengths in face units."""

    centre_down: float = 0.55  # crop centre below the eye midpoint (the face extent's middle)
    face_extent: float = 3.2  # forehead top to chin
    margin: float = 0.2  # added on each side, as a fraction of face_extent

    def __post_init__(self) -> None:
        if self.face_extent <= 0 or self.margin < 0:
            raise ValueError("CropConfig.face_extent must be > 0 and margin >= 0")


@dataclass(frozen=True)
class Wav2LipBoxConfig:
    """Wav2Lip's face box: a detector-style box (brows to chin, cheek to cheek) grown by pads in frame pixels
    (top, bottom, left, right; Wav2Lip's inference uses 0, 10, 0, 0), then squeezed to a square crop. With
    `upright` the box turns with the head's roll; otherwise it is axis-aligned like a detector's."""

    half_width: float = 1.3  # face units either side of the face's midline
    top: float = -0.7  # face units along the down axis (above the brows)
    bottom: float = 2.2  # about the chin (1.9-2.3 between people and poses; the pads add margin)
    pads_px: tuple[int, int, int, int] = (0, 10, 0, 0)
    upright: bool = True

    def __post_init__(self) -> None:
        if self.half_width <= 0 or self.bottom <= self.top:
            raise ValueError("Wav2LipBoxConfig needs half_width > 0 and bottom > top")


def _landmarks(face: Face | np.ndarray) -> np.ndarray:
    return np.asarray(face.landmarks if isinstance(face, Face) else face, dtype=np.float64)


def face_frame(face: Face | np.ndarray) -> FaceFrame:
    """The face's coordinate frame from a Face or (≥468, 2) landmarks in pixels."""
    pts = _landmarks(face)
    right_eye = pts[list(RIGHT_EYE)].mean(axis=0)
    left_eye = pts[list(LEFT_EYE)].mean(axis=0)
    origin = 0.5 * (right_eye + left_eye)
    eye_to_eye = left_eye - right_eye
    eye_to_nose = pts[NOSE_BASE] - origin
    # Both lines vote for the face's rotation: the eye line points along x, eye-to-nose along y.
    across = eye_to_eye / max(np.linalg.norm(eye_to_eye), 1e-9)
    down_as_across = np.array([eye_to_nose[1], -eye_to_nose[0]]) / max(np.linalg.norm(eye_to_nose), 1e-9)
    x_axis = across + down_as_across
    x_axis /= max(np.linalg.norm(x_axis), 1e-9)
    y_axis = np.array([-x_axis[1], x_axis[0]])
    unit = math.sqrt(0.5 * (eye_to_eye @ eye_to_eye + eye_to_nose @ eye_to_nose))
    return FaceFrame(origin=origin, x_axis=x_axis, y_axis=y_axis, unit=max(unit, 1e-6))


def to_face_units(landmarks: np.ndarray, frame: FaceFrame | None = None) -> np.ndarray:
    """(N, 2) landmarks in the face's own upright frame, in face units: x across (image right), y down the face,
    origin at the eye midpoint. Removes the head's position, size and roll, not its yaw or pitch."""
    f = frame or face_frame(landmarks)
    return f.units(np.asarray(landmarks, dtype=np.float64)[:, :2] - f.origin)


@dataclass(frozen=True)
class Similarity:
    """A 3D similarity x -> scale * rotation @ x + shift, in pixels (z as the tracker's depth, scaled like x)."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    shift: np.ndarray  # (3,)

    @classmethod
    def fit(cls, src: np.ndarray, dst: np.ndarray) -> Similarity:
        """The least-squares similarity taking points src (N, 3) onto dst (N, 3) (Umeyama)."""
        mu_s, mu_d = src.mean(axis=0), dst.mean(axis=0)
        a, b = src - mu_s, dst - mu_d
        u, sig, vt = np.linalg.svd(b.T @ a)
        d = np.diag([1.0, 1.0, np.sign(np.linalg.det(u @ vt))])
        rot = u @ d @ vt
        scale = float(np.trace(np.diag(sig) @ d) / max(float((a**2).sum()), 1e-12))
        return cls(scale, rot, mu_d - scale * rot @ mu_s)

    def __call__(self, points: np.ndarray) -> np.ndarray:
        return self.scale * points @ self.rotation.T + self.shift

    def back(self, moves: np.ndarray) -> np.ndarray:
        """Moves (N, 3) in the target's coordinates as moves in the source's."""
        return moves @ self.rotation / self.scale


def onto_skull(points: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, Similarity]:
    """(478, 3) landmarks with depth moved onto `reference` (478, 3) by their SKULL points, and the move: what is
    left of their difference is the face's own (expression, speech), not the head's position, size or rotation."""
    sim = Similarity.fit(points[list(SKULL)], reference[list(SKULL)])
    return sim(points), sim


def skull_units(points: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(F, 478, 2) face-unit shapes of landmarks with depth (F, 478, 3), each moved onto the skull of `reference`
    (478, 3), in the reference's face frame: the head's position, size, roll, yaw and pitch taken out, where
    `to_face_units` alone leaves yaw and pitch in (a nod then reads as a change of shape)."""
    frame = face_frame(reference[:, :2])
    return np.array([to_face_units(onto_skull(p, reference)[0][:, :2], frame) for p in points]).reshape(-1, 478, 2)


def _box_affine(centre: np.ndarray, x_axis: np.ndarray, y_axis: np.ndarray, width_px: float, height_px: float,
                size: tuple[int, int]) -> Affine:
    """Map the box (centre, axes, width x height pixels) onto a crop of size (w, h), edges onto edges."""
    sx = size[0] / width_px
    sy = size[1] / height_px
    rot = np.stack([x_axis * sx, y_axis * sy])  # (2, 2) rows: crop x and y per frame pixel
    offset = np.array([0.5 * size[0] - 0.5, 0.5 * size[1] - 0.5]) - rot @ centre
    return np.hstack([rot, offset[:, None]])


def _size_wh(size: int | tuple[int, int]) -> tuple[int, int]:
    w, h = (size, size) if isinstance(size, int | np.integer) else size
    if int(w) < 1 or int(h) < 1:
        raise ValueError(f"crop size must be positive, got {size}")
    return int(w), int(h)


def crop_transform(face: Face | np.ndarray, size: int | tuple[int, int] = WARP_CROP_SIZE,
                   config: CropConfig | None = None) -> Affine:
    """Similarity transform from frame pixels to an upright, square-scaled crop of the whole face."""
    cfg = config or CropConfig()
    frame = face_frame(face)
    w, h = _size_wh(size)
    centre = frame.origin + cfg.centre_down * frame.unit * frame.y_axis
    side_px = cfg.face_extent * (1.0 + 2.0 * cfg.margin) * frame.unit
    # The shorter crop side spans side_px; a non-square crop keeps the scale isotropic.
    scale = min(w, h) / side_px
    return _box_affine(centre, frame.x_axis, frame.y_axis, w / scale, h / scale, (w, h))


def wav2lip_transform(face: Face | np.ndarray, size: int = WAV2LIP_CROP_SIZE,
                      config: Wav2LipBoxConfig | None = None) -> Affine:
    """Affine from frame pixels to Wav2Lip's (size x size) face crop: its padded box squeezed to a square."""
    cfg = config or Wav2LipBoxConfig()
    frame = face_frame(face)
    top, bottom, left, right = cfg.pads_px
    u = frame.unit
    width = 2.0 * cfg.half_width * u + left + right
    height = (cfg.bottom - cfg.top) * u + top + bottom
    box_centre = frame.origin + 0.5 * (cfg.top + cfg.bottom) * u * frame.y_axis  # before padding
    if cfg.upright:
        x_axis, y_axis = frame.x_axis, frame.y_axis
    else:
        x_axis, y_axis = np.array([1.0, 0.0]), np.array([0.0, 1.0])
    # Uneven pads move the box: half the difference along each of the box's axes.
    centre = box_centre + 0.5 * (right - left) * x_axis + 0.5 * (bottom - top) * y_axis
    return _box_affine(centre, x_axis, y_axis, width, height, (size, size))


def invert_affine(m: Affine) -> Affine:
    """The exact inverse of a 2x3 affine (crop pixels back to frame pixels)."""
    return cv2.invertAffineTransform(np.asarray(m, dtype=np.float64))


def transform_points(m: Affine, points: np.ndarray) -> np.ndarray:
    """Apply a 2x3 affine to (N, 2) points."""
    pts = np.asarray(points, dtype=np.float64)
    return pts @ m[:, :2].T + m[:, 2]


def affine_scale(m: Affine) -> float:
    """Mean linear scale of an affine (crop pixels per frame pixel)."""
    return math.sqrt(abs(float(np.linalg.det(np.asarray(m)[:, :2]))))


def warp_crop(frame: np.ndarray, m: Affine, size: int | tuple[int, int]) -> np.ndarray:
    """Crop (h, w[, C]) from the frame through M. The cost depends on the crop size and the face's footprint in
    the frame, not on the frame's size.

    Bilinear sampling aliases when shrinking by more than 2x, so then the crop's footprint in the frame is first
    box-averaged down by a power of two f (exact, pixel grids aligned: small pixel u covers frame pixels
    f·u .. f·u + f - 1) and sampled from there with M adjusted to match, so the map is still exactly M.
    Outside the frame the edge pixels are repeated.
    """
    w, h = _size_wh(size)
    m = np.asarray(m, dtype=np.float64)
    scale = affine_scale(m)
    f = 1
    while scale * f < 0.5 and f < MAX_SHRINK:
        f *= 2
    if f == 1:
        return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    # The crop's footprint in the frame (corners through the inverse, one small pixel of margin), on the f-grid.
    corners = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [-0.5, h - 0.5], [w - 0.5, h - 0.5]])
    back = transform_points(invert_affine(m), corners)
    fh, fw = frame.shape[:2]
    x0 = int(np.clip(math.floor(back[:, 0].min() / f) - 1, 0, fw // f)) * f
    y0 = int(np.clip(math.floor(back[:, 1].min() / f) - 1, 0, fh // f)) * f
    x1 = int(np.clip(math.ceil(back[:, 0].max() / f) + 1, 0, fw // f)) * f
    y1 = int(np.clip(math.ceil(back[:, 1].max() / f) + 1, 0, fh // f)) * f
    if x1 <= x0 or y1 <= y0:  # entirely outside the frame (or the frame is smaller than f): sample directly
        return cv2.warpAffine(frame, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    small = cv2.resize(frame[y0:y1, x0:x1], ((x1 - x0) // f, (y1 - y0) // f), interpolation=cv2.INTER_AREA)
    # Small pixel u has its centre at frame x0 + f·u + (f - 1) / 2.
    m_small = np.hstack([m[:, :2] * f, (m[:, :2] @ [x0 + 0.5 * (f - 1), y0 + 0.5 * (f - 1)] + m[:, 2])[:, None]])
    return cv2.warpAffine(small, m_small, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
