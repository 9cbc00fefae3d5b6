"""Paste a processed face crop back into the frame under a feathered mask, touching only the face's rectangle.

A crop comes from `align.warp_crop(frame, M, size)`; an engine returns a changed crop of the same size; this
module maps it back through `invert_affine(M)`.

Two paste modes:

* replace (`source=None`): the frame takes the engine's crop, resampled to frame pixels, under the mask.
* detail-preserving (`source` = the crop the engine was given): the frame takes the engine's *change*
  (crop - source). Where the engine changed a pixel by much less than `BlendConfig.detail_levels`, the frame's
  own fine detail, lost by the downscale into the crop, is kept; where it changed it a lot (a new mouth, moved
  teeth), the engine's pixels win, so no ghost of the old detail remains. An engine that returns its input
  unchanged leaves the frame exactly as it was (difference 0), whatever the crop's resolution; in replace mode
  the same identity costs a resampling blur (two bilinear resamplings: within 2 grey levels on smooth skin, more
  on sharp edges if the crop is coarser than the face).

Cost: masks are built in crop space (at half its resolution); warps, blending and writes are restricted to the
bounding rectangle of the mask in the frame (cv2.warpAffine into that rectangle only), so the frame's size does not
matter. Pixels where the mask is 0 are never written: they stay bit-identical to the input. The blend itself is
8-bit arithmetic with rounding (within 2 grey levels of the exact blend).
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass

import cv2
import numpy as np

from livemood.face.align import Affine, face_frame, invert_affine, warp_crop

LOWER_FACE_FROM = 0.75  # lower-face mask starts this far down from the eyes, in eye-to-nose-base lengths


class MaskRegion(enum.Enum):
    """Which part of the face an engine changes."""

    FACE = "face"  # convex hull of all landmarks
    LOWER_FACE = "lower_face"  # below the middle of the nose: mouth, cheeks below the nose, jaw, chin


@dataclass(frozen=True)
class BlendConfig:
    """Mask and paste settings. Lengths are fractions of the crop's shorter side."""

    region: MaskRegion = MaskRegion.FACE
    grow: float = 0.0  # > 0 dilates the hull, < 0 erodes it
    feather: float = 0.06  # width of the soft edge, inside the (grown) hull
    color_match: bool = False  # match the engine's Lab mean/std to its input inside the mask
    detail_levels: float = 12.0  # grey levels; see the module docstring

    def __post_init__(self) -> None:
        if self.feather < 0 or self.detail_levels <= 0 or abs(self.grow) >= 0.5:
            raise ValueError("BlendConfig needs feather >= 0, detail_levels > 0 and |grow| < 0.5")


def face_mask(landmarks_crop: np.ndarray, size: int | tuple[int, int], config: BlendConfig | None = None
              ) -> np.ndarray:
    """(h, w) float32 mask in [0, 1] from (478, 2) landmarks already mapped into crop pixels.

    The hull is grown (or shrunk) by `grow`; the soft edge then rises from exactly 0 at the grown hull's edge to
    1 at `feather` inside it (a smoothstep of the distance to the edge), so the mask is 0 outside the grown hull.
    """
    cfg = config or BlendConfig()
    w, h = (size, size) if isinstance(size, int | np.integer) else size
    pts = np.asarray(landmarks_crop, dtype=np.float64)
    if cfg.region is MaskRegion.LOWER_FACE:
        frame = face_frame(pts)
        depth = (pts - frame.origin) @ frame.y_axis  # distance down the face, crop pixels
        eye_to_nose = float((pts[2] - frame.origin) @ frame.y_axis)
        pts = pts[depth >= LOWER_FACE_FROM * eye_to_nose]
    # The mask is smooth, so it is built at half resolution (4x less work) and enlarged bilinearly; the grids
    # are aligned so that half-resolution pixel u sits at full-resolution 2u + 0.5.
    hw, hh = (w + 1) // 2, (h + 1) // 2
    hull = cv2.convexHull(np.round((pts - 0.5) * 8).astype(np.int32))  # half-res pixels, 4 fractional bits
    inside = np.zeros((hh, hw), np.uint8)
    cv2.fillConvexPoly(inside, hull, 255, shift=4)
    side = 0.5 * min(w, h)
    grow_px = cfg.grow * side
    feather_px = max(cfg.feather * side, 1.0)
    # Distance in (half-res) pixels from the grown hull's edge, inwards (0 outside it); the distance outside the
    # hull is only needed when growing.
    dist = cv2.distanceTransform(inside, cv2.DIST_L2, cv2.DIST_MASK_5)
    if grow_px > 0:
        dist -= cv2.distanceTransform(255 - inside, cv2.DIST_L2, cv2.DIST_MASK_5)
    # Less one pixel, so that after enlarging (which spreads a half-res pixel by 1.5 pixels) the support still
    # ends inside the grown hull.
    dist += grow_px - 1.0
    np.maximum(dist, 0.0, out=dist)
    # Position across the soft edge in 1/255 steps (saturating at 255), then the smoothstep t²(3 - 2t) by table.
    half = cv2.LUT(cv2.convertScaleAbs(dist, alpha=255.0 / feather_px), _SMOOTHSTEP)
    return cv2.resize(half, (2 * hw, 2 * hh), interpolation=cv2.INTER_LINEAR)[:h, :w]


_t = np.linspace(0.0, 1.0, 256, dtype=np.float32)
_SMOOTHSTEP = (_t * _t * (3.0 - 2.0 * _t)).astype(np.float32)  # (256,) float32 table, 0 -> 0 and 255 -> 1


def match_color(crop: np.ndarray, reference: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Shift and scale the crop's Lab channels so that their mean and std inside mask > 0.5 match the
    reference's (e.g. an engine's output against its input). Returns a float32 BGR image in [0, 255]."""
    inside = mask > 0.5
    src = cv2.cvtColor(crop.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2Lab)
    if inside.sum() < 16:  # too few pixels for statistics
        return crop.astype(np.float32)
    ref = cv2.cvtColor(reference.astype(np.float32) * (1.0 / 255.0), cv2.COLOR_BGR2Lab)
    s_mean, s_std = src[inside].mean(axis=0), src[inside].std(axis=0)
    r_mean, r_std = ref[inside].mean(axis=0), ref[inside].std(axis=0)
    gain = r_std / np.maximum(s_std, 1e-3)
    lab = (src - s_mean) * gain + r_mean
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_Lab2BGR) * 255.0, 0.0, 255.0)


def mask_rect(mask: np.ndarray, m: Affine, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """Frame rectangle (x0, y0, x1, y1) covering the mask's support mapped back through M, or None if empty."""
    x, y, w, h = cv2.boundingRect((np.asarray(mask) > 0).view(np.uint8))
    if w == 0 or h == 0:
        return None
    # Support corners (pixel edges, plus a pixel of bilinear spill) through the inverse map.
    corners = np.array([[x - 1, y - 1], [x + w, y - 1], [x - 1, y + h], [x + w, y + h]], np.float64)
    inv = invert_affine(m)
    back = corners @ inv[:, :2].T + inv[:, 2]
    fh, fw = frame_shape[:2]
    x0, y0 = max(0, math.floor(back[:, 0].min())), max(0, math.floor(back[:, 1].min()))
    x1, y1 = min(fw, math.ceil(back[:, 0].max()) + 1), min(fh, math.ceil(back[:, 1].max()) + 1)
    return (x0, y0, x1, y1) if x1 > x0 and y1 > y0 else None


def _to_rect(image: np.ndarray, inv: Affine, rect: tuple[int, int, int, int],
             border: tuple[int, ...] = (0, 0, 0, 0)) -> np.ndarray:
    """Warp a crop-space image into the frame rectangle only (dst is the rectangle, not the frame), with
    `border` outside the crop (alpha 0 by default)."""
    x0, y0, x1, y1 = rect
    shifted = inv.copy()
    shifted[:, 2] -= (x0, y0)
    return cv2.warpAffine(image, shifted, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=border)


def _add_signed(base: np.ndarray, pos: np.ndarray, neg: np.ndarray) -> np.ndarray:
    """base + pos - neg in saturating uint8, without clipping in between (only one of pos, neg is kept)."""
    return cv2.subtract(cv2.add(base, cv2.subtract(pos, neg)), cv2.subtract(neg, pos))


def _scaled_diff(a: np.ndarray, b: np.ndarray, weight3: np.ndarray, scale: float = 1.0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """scale x weight x (a - b) as rounded (positive, negative) uint8 parts; weight3 in 0..255 means 0..1."""
    return (cv2.multiply(cv2.subtract(a, b), weight3, scale=scale / 255.0),
            cv2.multiply(cv2.subtract(b, a), weight3, scale=scale / 255.0))


def paste_back(frame: np.ndarray, crop: np.ndarray, m: Affine, mask: np.ndarray, *, presence: float = 1.0,
               source: np.ndarray | None = None, config: BlendConfig | None = None,
               out: np.ndarray | None = None) -> np.ndarray:
    """Blend `crop` (made from `frame` through M) back into the frame under `mask` x `presence`.

    frame: (H, W, 3) uint8 BGR. crop, source: (h, w, 3) uint8 crop-space images; mask: (h, w) float32 in [0, 1]
    from `face_mask`. With `source` (the engine's input) only the engine's change is pasted (see the module
    docstring). `out` receives the result and may be `frame` itself for an in-place paste; by default a copy is
    made. Only pixels with mask > 0 inside the mask's frame rectangle are written; where the engine changed
    nothing (with `source`) they are written back unchanged.
    """
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise ValueError(f"paste_back needs an (H, W, 3) uint8 frame, got {frame.dtype} {frame.shape}")
    if crop.dtype != np.uint8 or crop.ndim != 3 or crop.shape[2] != 3 or crop.shape[:2] != mask.shape:
        raise ValueError(f"crop {crop.dtype} {crop.shape} and mask {mask.shape} must be uint8 (h, w, 3) and (h, w)")
    if source is not None and (source.shape != crop.shape or source.dtype != np.uint8):
        raise ValueError(f"source {source.dtype} {source.shape} must match crop {crop.shape}")
    cfg = config or BlendConfig()
    if out is None:
        out = frame.copy()
    elif out.shape != frame.shape or out.dtype != np.uint8:
        raise ValueError("out must be a uint8 array shaped like frame")
    weight = float(np.clip(presence, 0.0, 1.0))
    alpha = cv2.convertScaleAbs(mask, alpha=255.0 * weight)  # (h, w) uint8, rounded
    # A zero rim keeps the crop's edge (where bilinear sampling meets the black border) out of the paste.
    alpha[0, :] = alpha[-1, :] = alpha[:, 0] = alpha[:, -1] = 0
    rect = mask_rect(alpha, m, frame.shape)
    if rect is None:
        return out
    if cfg.color_match:
        reference = source if source is not None else warp_crop(frame, m, (crop.shape[1], crop.shape[0]))
        crop = np.rint(match_color(crop, reference, mask)).astype(np.uint8)
    inv = invert_affine(m)
    if source is None:
        result, written = _replaced(frame, crop, alpha, inv, rect)
    else:
        result, written = _changed(frame, crop, source, alpha, m, inv, rect, cfg.detail_levels)
    x0, y0, x1, y1 = rect
    cv2.copyTo(result, written, out[y0:y1, x0:x1])  # only where alpha > 0
    return out


def _replaced(frame: np.ndarray, crop: np.ndarray, alpha: np.ndarray, inv: Affine,
              rect: tuple[int, int, int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Replace mode over the rectangle: frame + alpha x (warped crop - frame); returns (result, alpha)."""
    x0, y0, x1, y1 = rect
    base = frame[y0:y1, x0:x1]
    new = _to_rect(cv2.merge([crop, alpha]), inv, rect)  # (rh, rw, 4): colour and alpha in one warp
    a = cv2.extractChannel(new, 3)
    pos, neg = _scaled_diff(cv2.cvtColor(new, cv2.COLOR_BGRA2BGR), base, cv2.cvtColor(a, cv2.COLOR_GRAY2BGR))
    return _add_signed(base, pos, neg), a


def _changed(frame: np.ndarray, crop: np.ndarray, source: np.ndarray, alpha: np.ndarray, m: Affine, inv: Affine,
             rect: tuple[int, int, int, int], detail_levels: float) -> tuple[np.ndarray, np.ndarray]:
    """Detail-preserving mode over the rectangle (see the module docstring); returns (result, alpha)."""
    x0, y0, x1, y1 = rect
    base = frame[y0:y1, x0:x1]
    # The change alpha x (crop - source) is premultiplied in crop space and carried through one warp coded as
    # 128 + change / 2: 8 bits, so within 1 grey level, and exactly 128 ("no change") where the engine left a
    # pixel alone or outside the crop.
    half_pos, half_neg = _scaled_diff(crop, source, cv2.cvtColor(alpha, cv2.COLOR_GRAY2BGR), scale=0.5)
    coded = cv2.subtract(cv2.add(half_pos, _NO_CHANGE), half_neg)
    packed = _to_rect(cv2.merge([coded, alpha]), inv, rect, border=(*_NO_CHANGE[:3], 0))
    # frame + 2 x (coded - 128), saturated: one pass.
    result = cv2.addWeighted(base, 1.0, cv2.cvtColor(packed, cv2.COLOR_BGRA2BGR), 2.0, -2.0 * _NO_CHANGE[0])
    # Where the engine changed a pixel a lot, its pixels should replace the frame's fine detail rather than be
    # added on top of it: + replace x (warped source - frame), computed only around such pixels.
    diff = cv2.absdiff(crop, source)
    diff = np.maximum(np.maximum(diff[..., 0], diff[..., 1]), diff[..., 2])
    replace = cv2.multiply(alpha, cv2.LUT(diff, _replace_lut(detail_levels)), scale=1.0 / 255.0)
    sub = mask_rect(replace, m, frame.shape)
    if sub is not None:
        sx0, sy0, sx1, sy1 = max(sub[0], x0), max(sub[1], y0), min(sub[2], x1), min(sub[3], y1)
        if sx1 > sx0 and sy1 > sy0:
            old = _to_rect(cv2.merge([source, replace]), inv, (sx0, sy0, sx1, sy1))
            rows, cols = slice(sy0 - y0, sy1 - y0), slice(sx0 - x0, sx1 - x0)
            weight3 = cv2.cvtColor(cv2.extractChannel(old, 3), cv2.COLOR_GRAY2BGR)
            pos, neg = _scaled_diff(cv2.cvtColor(old, cv2.COLOR_BGRA2BGR), base[rows, cols], weight3)
            result[rows, cols] = _add_signed(result[rows, cols], pos, neg)
    return result, cv2.extractChannel(packed, 3)


_NO_CHANGE = (128, 128, 128, 0)  # per-channel scalar: OpenCV reads a bare 128 as (128, 0, 0, 0)


_LUT_CACHE: dict[float, np.ndarray] = {}


def _replace_lut(levels: float) -> np.ndarray:
    """(256,) uint8: 255 x (1 - exp(-d / levels)) for a channel difference d."""
    lut = _LUT_CACHE.get(levels)
    if lut is None:
        d = np.arange(256, dtype=np.float64)
        lut = _LUT_CACHE[levels] = np.rint(255.0 * (1.0 - np.exp(-d / levels))).astype(np.uint8)
    return lut
