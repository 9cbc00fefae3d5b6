"""Aligned crops and paste-back on real frames: round trips, exactness outside the mask, identity engines."""

from __future__ import annotations

import functools
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from livemood.face.align import (
    WAV2LIP_CROP_SIZE,
    CropConfig,
    Wav2LipBoxConfig,
    affine_scale,
    crop_transform,
    face_frame,
    invert_affine,
    transform_points,
    warp_crop,
    wav2lip_transform,
)
from livemood.face.blend import BlendConfig, MaskRegion, face_mask, mask_rect, paste_back
from livemood.face.tracker import Face, FaceTracker

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CLIPS = ("talk_a.mp4", "talk_b.mp4", "talk_c.mp4", "talk_d.mp4", "talk_e.mp4")
SETTLE_FRAMES = 8  # presence reaches 1 after 200 ms at 25 fps

pytestmark = pytest.mark.skipif(not MEDIA.is_dir(), reason=f"shared test media not found at {MEDIA}")


@functools.lru_cache(maxsize=8)
def scene(name: str) -> tuple[np.ndarray, Face]:
    """A frame of a shared clip with its tracked face, after the tracker has settled."""
    with av.open(str(MEDIA / name)) as container, FaceTracker() as tracker:
        for i, frame in enumerate(container.decode(video=0)):
            image = frame.to_ndarray(format="bgr24")
            face = tracker.track(image, 40 * i)
            if i == SETTLE_FRAMES:
                break
    assert face is not None and face.presence == 1.0
    return image, face


def crop_scene(name: str, size: int = 256, config: BlendConfig | None = None
               ) -> tuple[np.ndarray, Face, np.ndarray, np.ndarray, np.ndarray]:
    """(frame, face, M, crop, mask) for a whole-face crop of the given size."""
    frame, face = scene(name)
    m = crop_transform(face, size)
    return frame, face, m, warp_crop(frame, m, size), face_mask(transform_points(m, face.landmarks), size, config)


def frame_alpha(mask: np.ndarray, m: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """The crop-space mask carried into the whole frame (reference computation, full-frame on purpose)."""
    return cv2.warpAffine(mask, invert_affine(m), (shape[1], shape[0]), flags=cv2.INTER_LINEAR)


# --- alignment ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", CLIPS)
def test_crop_is_an_upright_similarity_holding_the_whole_face(clip: str) -> None:
    _, face, m, _, _ = crop_scene(clip)
    assert m[0, 0] == pytest.approx(m[1, 1]) and m[0, 1] == pytest.approx(-m[1, 0])  # rotation + scale
    pts = transform_points(m, face.landmarks)
    margin = 0.05 * 256
    assert pts.min() > margin and pts.max() < 256 - margin
    right_eye, left_eye = pts[[33, 133]].mean(axis=0), pts[[362, 263]].mean(axis=0)
    tilt = np.degrees(np.arctan2(left_eye[1] - right_eye[1], left_eye[0] - right_eye[0]))
    assert abs(tilt) < 8.0  # the eye line is level up to the nose line's vote
    assert abs(0.5 * (right_eye[0] + left_eye[0]) - 127.5) < 0.06 * 256  # centred


@pytest.mark.parametrize("clip", CLIPS)
def test_crop_round_trip_reproduces_the_face(clip: str) -> None:
    frame, face, m, crop, mask = crop_scene(clip, size=768)
    assert affine_scale(m) > 1.5  # an enlarging crop: the round trip then loses almost nothing
    pts = face.landmarks.astype(np.float64)
    assert np.abs(transform_points(invert_affine(m), transform_points(m, pts)) - pts).max() < 1e-9
    back = cv2.warpAffine(crop, invert_affine(m), (frame.shape[1], frame.shape[0]), flags=cv2.INTER_LINEAR)
    inside = frame_alpha(mask, m, frame.shape) > 0.99
    err = np.abs(back.astype(np.int16) - frame)[inside]
    assert err.mean() < 1.0 and np.percentile(err, 99) <= 8, (err.mean(), np.percentile(err, 99))


def test_warp_crop_supersampling_keeps_the_geometry() -> None:
    # A linear ramp is reproduced exactly by both bilinear sampling and box averaging, so a shrinking crop
    # (supersampled, then averaged down) must read the very same values as plain bilinear sampling.
    h, w = 900, 1200
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ramp = np.clip(np.dstack([0.2 * xx, 0.25 * yy, 0.1 * (xx + yy)]), 0, 255)
    m = np.array([[0.2, 0.03, -20.0], [-0.03, 0.2, -30.0]])
    assert affine_scale(m) < 0.5
    plain = cv2.warpAffine(ramp, m, (96, 96), flags=cv2.INTER_LINEAR)
    assert np.abs(warp_crop(ramp, m, 96) - plain).max() < 0.05


@pytest.mark.parametrize("clip", ["talk_a.mp4", "talk_c.mp4"])
def test_wav2lip_box_and_pads(clip: str) -> None:
    _, face = scene(clip)
    bare = wav2lip_transform(face, config=Wav2LipBoxConfig(pads_px=(0, 0, 0, 0)))
    padded = wav2lip_transform(face)  # Wav2Lip's pads: 10 px at the bottom
    down = face_frame(face).y_axis
    # Pads move only their own edge, by exactly their size in frame pixels.
    top, bottom = [47.5, -0.5], [47.5, WAV2LIP_CROP_SIZE - 0.5]
    assert np.allclose(transform_points(invert_affine(padded), [top]), transform_points(invert_affine(bare), [top]))
    moved = transform_points(invert_affine(padded), [bottom]) - transform_points(invert_affine(bare), [bottom])
    assert np.allclose(moved[0], 10.0 * down)
    pts = transform_points(padded, face.landmarks)
    assert 0 < pts[152, 1] < WAV2LIP_CROP_SIZE  # chin inside
    assert 0.3 * 96 < pts[1, 1] < 0.6 * 96  # nose tip near the middle: the lower half is the mouth
    upright = transform_points(padded, face.landmarks[[33, 263]])
    assert abs(upright[0, 1] - upright[1, 1]) < 0.15 * abs(upright[0, 0] - upright[1, 0])
    axis_aligned = wav2lip_transform(face, config=Wav2LipBoxConfig(upright=False))
    assert axis_aligned[0, 1] == 0.0 and axis_aligned[1, 0] == 0.0


def test_config_validation() -> None:
    with pytest.raises(ValueError):
        CropConfig(margin=-0.1)
    with pytest.raises(ValueError):
        Wav2LipBoxConfig(top=1.0, bottom=0.5)
    with pytest.raises(ValueError):
        BlendConfig(feather=-1.0)


# --- masks -------------------------------------------------------------------------------------------------


def test_face_masks() -> None:
    _, face, m, _, mask = crop_scene("talk_b.mp4")
    pts = transform_points(m, face.landmarks)
    assert mask.dtype == np.float32 and mask.min() == 0.0 and mask.max() == 1.0
    hull = np.zeros((256, 256), np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(pts).astype(np.int32)), 1)
    ring = cv2.dilate(hull, np.ones((5, 5), np.uint8))
    assert not mask[ring == 0].any()  # nothing outside the hull (2 px of rounding slack)
    grown = face_mask(pts, 256, BlendConfig(grow=0.05))
    grown_ring = cv2.dilate(hull, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * 15 + 1, 2 * 15 + 1)))
    assert grown[grown_ring == 0].max() == 0.0 and grown[ring == 0].max() > 0.0  # 0.05 x 256 = 12.8 px
    shrunk = face_mask(pts, 256, BlendConfig(grow=-0.05))
    assert (shrunk > 0).sum() < (mask > 0).sum() < (grown > 0).sum()
    lower = face_mask(pts, 256, BlendConfig(region=MaskRegion.LOWER_FACE))
    mouth = np.round(pts[[13, 14]].mean(axis=0)).astype(int)
    eyes = np.round(pts[[33, 263, 468, 473]]).astype(int)
    assert lower[mouth[1], mouth[0]] == 1.0 and not lower[eyes[:, 1], eyes[:, 0]].any()


# --- paste-back --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("clip", CLIPS)
def test_identity_engine_returns_the_frame_exactly(clip: str) -> None:
    frame, _, m, crop, mask = crop_scene(clip)
    engine_output = crop.copy()
    for cfg in (BlendConfig(), BlendConfig(color_match=True)):
        out = paste_back(frame, engine_output, m, mask, source=crop, config=cfg)
        assert np.array_equal(out, frame)
    in_place = frame.copy()
    assert paste_back(in_place, engine_output, m, mask, presence=0.7, source=crop, out=in_place) is in_place
    assert np.array_equal(in_place, frame)


def test_identity_in_replace_mode_costs_only_resampling() -> None:
    # Without the source crop the frame gets the crop resampled twice; on an enlarging crop that is within
    # a grey level or two almost everywhere.
    frame, _, m, crop, mask = crop_scene("talk_d.mp4", size=768)
    out = paste_back(frame, crop, m, mask)
    err = np.abs(out.astype(np.int16) - frame)
    assert err.mean() < 0.2 and np.percentile(err[frame_alpha(mask, m, frame.shape) > 0], 99) <= 3


@pytest.mark.parametrize("use_source", [False, True])
def test_pixels_outside_the_mask_stay_bit_identical(use_source: bool) -> None:
    frame, face, m, crop, _ = crop_scene("talk_c.mp4")
    mask = face_mask(transform_points(m, face.landmarks), 256, BlendConfig(grow=0.04))
    engine_output = 255 - crop  # the biggest change there is
    out = paste_back(frame, engine_output, m, mask, source=crop if use_source else None)
    untouched = frame_alpha(mask, m, frame.shape) == 0
    assert np.array_equal(out[untouched], frame[untouched])
    x0, y0, x1, y1 = mask_rect(mask, m, frame.shape)
    outside = np.ones(frame.shape[:2], bool)
    outside[y0:y1, x0:x1] = False
    assert np.array_equal(out[outside], frame[outside])
    assert (out != frame).any(axis=2).sum() > 0.9 * (~untouched).sum()  # and the inside did change


def test_presence_scales_the_change() -> None:
    frame, _, m, crop, mask = crop_scene("talk_e.mp4")
    engine_output = cv2.add(crop, (40, 40, 40, 0))
    full, half, none = (np.abs(paste_back(frame, engine_output, m, mask, presence=p, source=crop).astype(int)
                               - frame).sum() for p in (1.0, 0.5, 0.0))
    assert none == 0 and half == pytest.approx(0.5 * full, rel=0.05)


def test_no_seam_at_the_mask_edge() -> None:
    frame, _, m, crop, mask = crop_scene("talk_a.mp4")
    cfg = BlendConfig()
    alpha = frame_alpha(mask, m, frame.shape)
    # The blend weight rises over `feather` (smoothstep, slope at most 1.5 / width) with no step anywhere.
    feather_frame_px = cfg.feather * 256 / affine_scale(m)
    steepest = max(np.abs(np.diff(alpha, axis=0)).max(), np.abs(np.diff(alpha, axis=1)).max())
    assert steepest <= 1.5 / feather_frame_px * 1.5 + 2 / 255
    # A uniformly brighter face changes the frame smoothly, not at an edge (away from saturated pixels). The
    # frame is blurred so that the crop's resampling loses no detail that would show up as texture here.
    frame = cv2.GaussianBlur(frame, (0, 0), 3.0)
    crop = warp_crop(frame, m, 256)
    change = paste_back(frame, cv2.add(crop, (30, 30, 30, 0)), m, mask, source=crop).astype(int) - frame
    ok = (frame < 220).all(axis=2)
    ok = ok[1:, :] & ok[:-1, :]
    # (+4: the 8-bit paste rounds each pixel by up to 2 levels, the coded change to even values included.)
    assert np.abs(np.diff(change, axis=0)).max(axis=2)[ok].max() <= 30 * steepest + 4


def test_color_match_removes_a_cast() -> None:
    frame, _, m, crop, mask = crop_scene("talk_b.mp4")
    cast = cv2.add(crop, (30, 0, 0, 0))  # bluer
    inside = frame_alpha(mask, m, frame.shape) > 0.99
    plain = paste_back(frame, cast, m, mask, source=crop)
    matched = paste_back(frame, cast, m, mask, source=crop, config=BlendConfig(color_match=True))
    shift_plain = plain[inside].mean(axis=0) - frame[inside].mean(axis=0)
    shift_matched = matched[inside].mean(axis=0) - frame[inside].mean(axis=0)
    assert shift_plain[0] > 20 and np.abs(shift_matched).max() < 2.0


def test_changed_pixels_replace_the_frame_detail() -> None:
    # An engine that paints the mouth a flat dark colour: its pixels win there, the frame's teeth and lip
    # texture must not show through (what pasting only the change would do).
    frame, face, m, crop, mask = crop_scene("talk_e.mp4")
    pts = transform_points(m, face.landmarks)
    painted = crop.copy()
    lips = cv2.convexHull(np.round(pts[[61, 291, 0, 17, 37, 267, 84, 314]]).astype(np.int32))
    cv2.fillConvexPoly(painted, lips, (20, 20, 20))
    out = paste_back(frame, painted, m, mask, source=crop)
    region = np.zeros((256, 256), np.float32)
    cv2.fillConvexPoly(region, lips, 1.0)
    inner = frame_alpha(cv2.erode(region, np.ones((7, 7), np.uint8)), m, frame.shape) > 0.999
    assert inner.sum() > 100
    assert np.abs(out[inner].astype(int) - 20).mean() < 3.0
    assert frame[inner].std() > 10  # there was detail to hide


def test_paste_depends_only_on_the_face_region() -> None:
    # The same face in a much larger frame gives the same pixels (the work follows the face's rectangle).
    frame, _, m, crop, mask = crop_scene("talk_d.mp4")
    big = np.zeros((frame.shape[0] + 700, frame.shape[1] + 900, 3), np.uint8)
    big[300:300 + frame.shape[0], 500:500 + frame.shape[1]] = frame
    shift = np.array([[1.0, 0.0, -500.0], [0.0, 1.0, -300.0]])
    m_big = np.hstack([m[:, :2], (m[:, :2] @ shift[:, 2] + m[:, 2])[:, None]])
    engine_output = 255 - crop
    small_out = paste_back(frame, engine_output, m, mask, source=crop)
    big_out = paste_back(big, engine_output, m_big, mask, source=crop, out=big)
    assert np.array_equal(big_out[300:300 + frame.shape[0], 500:500 + frame.shape[1]], small_out)


def test_paste_rejects_bad_input() -> None:
    frame, _, m, crop, mask = crop_scene("talk_d.mp4")
    with pytest.raises(ValueError):
        paste_back(frame.astype(np.float32), crop, m, mask)
    with pytest.raises(ValueError):
        paste_back(frame, crop[:100], m, mask)
    with pytest.raises(ValueError):
        paste_back(frame, crop, m, mask, source=crop[..., :1])
