"""Face tracking: one person's 478 face-mesh landmarks per frame, smoothed, with a presence weight for fades.

`FaceTracker.track(frame, timestamp_ms)` follows a single person. It is built on mediapipe 0.10.21's legacy face
mesh in video mode (detect once, then run the landmark model on an ROI taken from the previous landmarks), fed
a *window* around that person rather than the whole frame:

* Only the window is converted to RGB (halved first when the face is larger than mediapipe's 192-px landmark
  input can use), so the per-frame cost follows the face, not the frame. People outside the window are never
  seen, so tracking cannot jump to them.
* The whole frame, downscaled, goes to mediapipe's short-range face detector only to acquire the person (at the
  start: the largest and most central face) or to find them again when lost, and then only near where they
  were last seen until `forget_ms` has passed.
* Raw landmarks are smoothed by `livemood.face.smoothing.LandmarkSmoother` (rigid head motion and face shape apart;
  lips nearly raw so lip sync survives).

Timestamps: the legacy mediapipe API keeps its own frame counter and takes no timestamp, so `timestamp_ms` is used
only here: for the smoothing filters' time step, the presence fades, and how long a lost face is held and
remembered. They should be capture times in milliseconds on a monotonic clock.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field, replace

import cv2
import mediapipe as mp
import numpy as np
from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL

from livemood.face.smoothing import MAX_DT_S, LandmarkSmoother, OneEuroFilter, SmoothingConfig

log = logging.getLogger(__name__)

NUM_LANDMARKS = 478  # face mesh with refine_landmarks: 468 mesh points + 2 x 5 iris points
FACE_OVAL: tuple[int, ...] = tuple(sorted({i for edge in FACEMESH_FACE_OVAL for i in edge}))
_FACE_OVAL_IDX = np.array(FACE_OVAL)
RIGHT_EYE_OUTER, LEFT_EYE_OUTER = 33, 263  # the subject's eyes: 33 appears on the image's left
DETECTION_TO_MESH_SIZE = 1.1  # the detector's square box is ~0.9 x the mesh's extent (forehead top to chin)
NOMINAL_DT_MS = 33.0  # time step assumed for the very first frame of a track
BLANK_RGB = np.zeros((64, 64, 3), np.uint8)  # shown to mediapipe to make it drop a face it should not track
# Mediapipe's landmark model sees a 192-px square covering 1.5 face sizes, i.e. a face of 128 px. Larger faces
# are halved (exactly, by box averaging) before mediapipe until they are under twice that: the model gets the
# same information, and colour conversion and mediapipe's own copy and resampling cost 4x less per halving.
MESH_FACE_PX = 128
WINDOW_ALIGN_PX = 4  # window sides are multiples of this, so halving twice is exact
# The short-range detector that acquires faces (on the frame downscaled to 640 px) misses faces narrower than about
# 1/8 of the frame's width; the full-range one still sees them down to about 1/13. Measured on talk_a placed on a
# 1280x720 canvas: a 160-px face acquired on every frame, 128 px on 3 of 31; full range found 96 px, not 64 px.
ACQUIRE_MIN_WIDTH = 1 / 8  # of the frame's width


@dataclass(frozen=True)
class HeadPose:
    """Head rotation in degrees. Yaw > 0: the face turns towards the image's right; pitch > 0: it looks down;
    roll > 0: the eye line turns clockwise in the image."""

    yaw: float
    pitch: float
    roll: float


@dataclass(frozen=True, eq=False)
class Face:
    """One tracked face in one frame.

    `landmarks` is (478, 2) float32 in frame pixels (smoothed); `depth` (478,) float32 their distance from the
    camera as mediapipe estimates it, in pixels and unsmoothed (relative: larger is farther); `box` (x0, y0, x1, y1)
    is the landmarks' extent. `score`
    is the face detector's confidence when the face was last (re)acquired (the legacy mesh exposes no
    per-frame score; a tracked face has passed `min_tracking_confidence`). `presence` in [0, 1] fades effects
    in and out when the face is found or lost; `timestamp_ms` is the frame's stamp.
    """

    landmarks: np.ndarray
    depth: np.ndarray
    box: tuple[float, float, float, float]
    score: float
    pose: HeadPose
    presence: float
    timestamp_ms: int

    @property
    def centre(self) -> tuple[float, float]:
        """Centre of `box` in pixels."""
        return (0.5 * (self.box[0] + self.box[2]), 0.5 * (self.box[1] + self.box[3]))

    @property
    def size(self) -> float:
        """Larger side of `box` in pixels."""
        return max(self.box[2] - self.box[0], self.box[3] - self.box[1])

    @property
    def points(self) -> np.ndarray:
        """(478, 3) float64: the landmarks with their depth (for alignment in 3D, `face.align.onto_skull`)."""
        return np.column_stack([self.landmarks, self.depth]).astype(np.float64)


@dataclass(frozen=True)
class TrackerConfig:
    """Face tracker settings. Sizes are in face sizes (the larger side of the landmark box) unless marked."""

    min_detection_confidence: float = 0.5
    min_tracking_confidence: float = 0.5
    full_range_detector: bool = False  # True: mediapipe's full-range detector (far, small faces; ~3x slower)
    detector_max_side_px: int = 640  # the whole frame is downscaled to this before searching for faces
    window_scale: float = 2.4  # side of the window given to mediapipe; its landmark ROI is 1.5 face sizes
    recentre_after: float = 0.2  # move the window once the face is this far off its centre...
    rescale_after: float = 1.25  # ...or its size changed by this factor
    max_jump: float = 0.6  # a mesh result farther than this from the last one is another face
    reacquire_radius: float = 1.5  # while lost, only faces this close to the last position are taken
    forget_ms: float = 2000.0  # after this long lost, the most prominent face anywhere is taken instead
    fade_ms: float = 200.0  # presence ramps 0 → 1 and 1 → 0 over this time
    min_frame_side_px: int = 32  # smaller frames cannot hold a trackable face
    smoothing: SmoothingConfig = field(default_factory=SmoothingConfig)

    def __post_init__(self) -> None:
        if self.window_scale < 1.6:
            raise ValueError("TrackerConfig.window_scale must be >= 1.6 (mediapipe's ROI is 1.5 face sizes)")
        if self.fade_ms <= 0 or self.forget_ms < 0:
            raise ValueError("TrackerConfig.fade_ms must be > 0 and forget_ms >= 0")
        for name in ("min_detection_confidence", "min_tracking_confidence"):
            if not 0.0 <= getattr(self, name) <= 1.0:
                raise ValueError(f"TrackerConfig.{name} must be in [0, 1]")


def head_pose(points: np.ndarray) -> HeadPose:
    """Head pose from (478, 3) landmarks in pixels (z as mediapipe gives it, scaled like x, away from camera > 0).

    Roll is the eye line's angle. Yaw and pitch come from the normal of the plane fitted to the face outline,
    which stays nearly fixed to the skull and is parallel to the image when the face looks into the camera.
    """
    eye_line = points[LEFT_EYE_OUTER] - points[RIGHT_EYE_OUTER]
    outline = points[_FACE_OVAL_IDX]
    centred = outline - outline.mean(axis=0)
    normal = np.linalg.eigh(centred.T @ centred)[1][:, 0]  # least-variance direction of the (36, 3) outline
    if normal[2] > 0:
        normal = -normal  # pointing towards the camera (negative z)
    return HeadPose(
        yaw=math.degrees(math.atan2(normal[0], -normal[2])),
        pitch=math.degrees(math.atan2(normal[1], -normal[2])),
        roll=math.degrees(math.atan2(eye_line[1], eye_line[0])),
    )


def _extent(points: np.ndarray) -> tuple[np.ndarray, float]:
    """Centre (2,) and larger side of the box around (N, ≥2) points."""
    lo = points[:, :2].min(axis=0)
    hi = points[:, :2].max(axis=0)
    return 0.5 * (lo + hi), float((hi - lo).max())


# A serialised NormalizedLandmark holding x, y, z only: field tag 1 (length 15), then three tagged float32s.
_LANDMARK_RECORD = np.dtype([("key", "u1"), ("size", "u1"), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"),
                             ("y", "<f4"), ("tz", "u1"), ("z", "<f4")])


def _landmark_array(landmarks: object) -> np.ndarray | None:
    """(478, 3) float64 from mediapipe's NormalizedLandmarkList, or None if it has another number of points.

    Reading 478 protobuf messages attribute by attribute costs ~0.2 ms; their wire form, when every point holds
    exactly x, y and z (as the face mesh gives them), is a fixed 17-byte record read in one go. Anything else
    falls back to the attribute loop.
    """
    data = landmarks.SerializeToString()  # type: ignore[attr-defined]
    if len(data) == NUM_LANDMARKS * _LANDMARK_RECORD.itemsize:
        rec = np.frombuffer(data, dtype=_LANDMARK_RECORD)
        if (rec["key"] == 0x0A).all() and (rec["size"] == 15).all() and (rec["tx"] == 0x0D).all() \
                and (rec["ty"] == 0x15).all() and (rec["tz"] == 0x1D).all():
            return np.stack([rec["x"], rec["y"], rec["z"]], axis=1).astype(np.float64)
    points = landmarks.landmark  # type: ignore[attr-defined]
    if len(points) != NUM_LANDMARKS:
        return None
    return np.array([(p.x, p.y, p.z) for p in points], dtype=np.float64)


def _rgb(image: np.ndarray) -> np.ndarray:
    """A grey, BGR or BGRA uint8 image (or view of one) as a new contiguous RGB array."""
    if image.ndim == 2 or image.shape[2] == 1:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    return cv2.cvtColor(image, cv2.COLOR_BGRA2RGB if image.shape[2] == 4 else cv2.COLOR_BGR2RGB)


class FaceTracker:
    """Tracks one person's face through a video; see the module docstring. Not thread-safe."""

    def __init__(self, config: TrackerConfig | None = None) -> None:
        self.config = config or TrackerConfig()
        cfg = self.config
        self._mesh = mp.solutions.face_mesh.FaceMesh(
            static_image_mode=False, max_num_faces=1, refine_landmarks=True,
            min_detection_confidence=cfg.min_detection_confidence,
            min_tracking_confidence=cfg.min_tracking_confidence)
        self._detector = mp.solutions.face_detection.FaceDetection(
            model_selection=int(cfg.full_range_detector), min_detection_confidence=cfg.min_detection_confidence)
        # For `small_face_px` only; made and run once here so a live call never waits for its graph to start.
        self._far_detector = None if cfg.full_range_detector else mp.solutions.face_detection.FaceDetection(
            model_selection=1, min_detection_confidence=cfg.min_detection_confidence)
        if self._far_detector is not None:
            self._far_detector.process(BLANK_RGB)
        self._smoother = LandmarkSmoother(NUM_LANDMARKS, cfg.smoothing)
        s = cfg.smoothing
        # Pose angles in degrees move like the rigid rotation, whose filter works on half a face height per
        # radian: the same beta per degree is rigid_beta · 0.5 · π / 180.
        self._pose_filter = OneEuroFilter(
            s.rigid_min_cutoff_hz, s.rigid_beta * 0.5 * math.pi / 180.0, s.rigid_d_cutoff_hz)
        self._warned: set[str] = set()
        self._closed = False
        self.reset()

    def reset(self) -> None:
        """Forget the tracked person; the next frame starts a new acquisition."""
        self._frame_hw: tuple[int, int] | None = None
        self._window: tuple[int, int, int, int] | None = None  # (x0, y0, x1, y1) pixels
        self._window_size = 0.0  # face size the window was made for, pixels
        self._mesh_tracking = False  # mediapipe holds a face from its previous call
        self._last_centre: np.ndarray | None = None  # last raw observation: centre (2,), size, time
        self._last_size = 0.0
        self._last_seen_ms = 0
        self._last_ts: int | None = None
        self._held: Face | None = None  # last returned face, held with decreasing presence while lost
        self._presence = 0.0
        self._score = 0.0

    def track(self, frame_bgr: np.ndarray, timestamp_ms: int) -> Face | None:
        """The tracked face in this (H, W, 3) uint8 BGR frame, or None.

        Grey (H, W) and BGRA frames are accepted. Frames with no face, too small, or black return the last face
        with fading presence for up to `fade_ms`, then None. Invalid input (not uint8, wrong shape) returns None
        and is logged once; it does not advance the tracker.
        """
        image = self._validated(frame_bgr)
        if image is None:
            return None
        ts = int(timestamp_ms)
        dt_ms = NOMINAL_DT_MS if self._last_ts is None else min(max(ts - self._last_ts, 0), 1000.0 * MAX_DT_S)
        self._last_ts = ts
        hw = image.shape[:2]
        if hw != self._frame_hw:  # new stream or new camera mode: coordinates no longer compare
            if self._frame_hw is not None:
                self._forget_target()
            self._frame_hw = hw
        raw = self._observe(image, ts) if min(hw) >= self.config.min_frame_side_px else None
        if raw is None:
            return self._fade(ts, dt_ms)
        return self._accept(raw, ts, dt_ms)

    def small_face_px(self, frame_bgr: np.ndarray) -> float | None:
        """Width in pixels of a face in this (H, W, 3) BGR frame that is too small to be acquired, or None.

        For telling the user why no face is tracked (one full-range detection, ~15 ms on 2 CPU cores): a face
        the full-range detector sees but narrower than `ACQUIRE_MIN_WIDTH` of the frame. None also when the tracker
        already uses the full-range detector, which then sees nothing smaller.
        """
        image = self._validated(frame_bgr)
        if image is None or self._far_detector is None:
            return None
        h, w = image.shape[:2]
        scale = min(1.0, self.config.detector_max_side_px / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        detections = self._far_detector.process(_rgb(small)).detections or []
        widths = [det.location_data.relative_bounding_box.width * w for det in detections]
        small_widths = [x for x in widths if x < ACQUIRE_MIN_WIDTH * w]
        return max(small_widths) if small_widths and len(small_widths) == len(widths) else None

    def close(self) -> None:
        """Release mediapipe's graphs. Safe to call twice."""
        if not self._closed:
            self._closed = True
            self._mesh.close()
            self._detector.close()
            if self._far_detector is not None:
                self._far_detector.close()

    def __enter__(self) -> FaceTracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- observation -------------------------------------------------------------------------------------

    def _validated(self, frame: np.ndarray) -> np.ndarray | None:
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8:
            self._warn_once("dtype", "FaceTracker.track needs a uint8 image, got %s; returning None",
                            getattr(frame, "dtype", type(frame).__name__))
            return None
        if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] in (1, 3, 4)):
            return frame
        self._warn_once("shape", "FaceTracker.track needs (H, W), (H, W, 3) or (H, W, 4), got %s", frame.shape)
        return None

    def _warn_once(self, key: str, msg: str, *args: object) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def _observe(self, image: np.ndarray, ts: int) -> np.ndarray | None:
        """Raw (478, 3) landmarks of the tracked person in frame pixels, or None."""
        if self._window is not None:
            raw = self._mesh_in_window(image)
            if raw is not None and self._plausible(raw, ts):
                return raw
            if raw is not None:  # mediapipe latched on to someone else: make it let go
                self._drop_mesh_face()
        found = self._search(image, ts)
        if found is None:
            self._window = None
            return None
        centre, size, score = found
        self._place_window(centre, size, image.shape)
        self._drop_mesh_face()
        raw = self._mesh_in_window(image)
        if raw is None:
            return None
        raw_centre, raw_size = _extent(raw)
        if np.linalg.norm(raw_centre - centre) > 0.5 * size or not 0.5 < raw_size / size < 2.0:
            self._drop_mesh_face()
            return None
        self._score = score
        return raw

    def _mesh_in_window(self, image: np.ndarray) -> np.ndarray | None:
        assert self._window is not None
        x0, y0, x1, y1 = self._window
        window = image[y0:y1, x0:x1]
        halvings = 0
        while halvings < 2 and self._window_size >= (2 << halvings) * MESH_FACE_PX:
            halvings += 1
        if halvings:
            f = 1 << halvings
            window = cv2.resize(window, ((x1 - x0) // f, (y1 - y0) // f), interpolation=cv2.INTER_AREA)
        result = self._mesh.process(_rgb(window))
        faces = result.multi_face_landmarks
        self._mesh_tracking = bool(faces)
        if not faces:
            return None
        pts = _landmark_array(faces[0])  # (478, 3) normalised to the window
        if pts is None:
            return None
        w, h = x1 - x0, y1 - y0
        pts *= (w, h, w)  # mediapipe scales z like x
        pts[:, 0] += x0
        pts[:, 1] += y0
        return pts

    def _drop_mesh_face(self) -> None:
        if self._mesh_tracking:
            self._mesh.process(BLANK_RGB)  # the tracked ROI holds no face there, so mediapipe forgets it
            self._mesh_tracking = False

    def _plausible(self, raw: np.ndarray, ts: int) -> bool:
        """Whether a mesh result continues the tracked person (not a jump to someone else)."""
        if self._last_centre is None:
            return True
        centre, size = _extent(raw)
        reach = self.config.max_jump if ts - self._last_seen_ms <= self.config.fade_ms else self.config.reacquire_radius
        near = np.linalg.norm(centre - self._last_centre) <= reach * self._last_size
        return bool(near and 0.66 < size / self._last_size < 1.5)

    def _search(self, image: np.ndarray, ts: int) -> tuple[np.ndarray, float, float] | None:
        """Detect faces in the whole (downscaled) frame and pick the person to follow: (centre, size, score)."""
        h, w = image.shape[:2]
        scale = min(1.0, self.config.detector_max_side_px / max(h, w))
        small = image if scale == 1.0 else cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        detections = self._detector.process(_rgb(small)).detections or []
        candidates = []
        for det in detections:
            box = det.location_data.relative_bounding_box
            centre = np.array([(box.xmin + 0.5 * box.width) * w, (box.ymin + 0.5 * box.height) * h])
            size = DETECTION_TO_MESH_SIZE * max(box.width * w, box.height * h)
            candidates.append((centre, size, float(det.score[0])))
        if not candidates:
            return None
        if self._last_centre is not None and ts - self._last_seen_ms <= self.config.forget_ms:
            # Recently lost: only the same person, near where they were and about as large.
            reach = self.config.reacquire_radius * self._last_size
            near = [c for c in candidates if np.linalg.norm(c[0] - self._last_centre) <= reach
                    and 0.5 < c[1] / self._last_size < 2.0]
            return min(near, key=lambda c: float(np.linalg.norm(c[0] - self._last_centre)), default=None)
        # New acquisition: the largest and most central face (size relative to the frame, damped by distance
        # from the frame centre relative to the half-diagonal).
        half_diag = 0.5 * math.hypot(w, h)
        frame_centre = np.array([0.5 * w, 0.5 * h])
        return max(candidates, key=lambda c: c[1] / half_diag
                   * (1.0 - 0.5 * float(np.linalg.norm(c[0] - frame_centre)) / half_diag))

    def _place_window(self, centre: np.ndarray, size: float, shape: tuple[int, ...]) -> None:
        h, w = shape[:2]
        side = self.config.window_scale * size
        a = WINDOW_ALIGN_PX
        ww, wh = (min(n, math.ceil(side / a) * a) // a * a for n in (w, h))
        x0 = int(np.clip(round(centre[0] - 0.5 * ww), 0, w - ww))
        y0 = int(np.clip(round(centre[1] - 0.5 * wh), 0, h - wh))
        self._window = (x0, y0, x0 + ww, y0 + wh)
        self._window_size = size

    def _maybe_recentre(self, centre: np.ndarray, size: float, shape: tuple[int, ...]) -> None:
        assert self._window is not None
        x0, y0, x1, y1 = self._window
        off = np.abs(centre - (0.5 * (x0 + x1), 0.5 * (y0 + y1))).max() / size
        ratio = size / self._window_size
        if off > self.config.recentre_after or not 1 / self.config.rescale_after < ratio < self.config.rescale_after:
            self._place_window(centre, size, shape)

    # --- state --------------------------------------------------------------------------------------------

    def _accept(self, raw: np.ndarray, ts: int, dt_ms: float) -> Face:
        centre, size = _extent(raw)
        if self._held is None:  # a new track: no history to smooth against, presence starts from 0
            self._smoother.reset()
            self._pose_filter.reset()
            self._presence = 0.0
            dt_obs_s = NOMINAL_DT_MS / 1000.0
        else:
            self._presence = min(1.0, self._presence + dt_ms / self.config.fade_ms)
            dt_obs_s = (ts - self._last_seen_ms) / 1000.0
        self._last_centre, self._last_size, self._last_seen_ms = centre, size, ts
        self._maybe_recentre(centre, size, self._frame_hw or (0, 0))
        pts = self._smoother.update(raw[:, :2], dt_obs_s).astype(np.float32)
        pose = head_pose(raw)
        yaw, pitch, roll = self._pose_filter(np.array([[pose.yaw, pose.pitch, pose.roll]]), dt_obs_s)[0]
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        self._held = Face(
            landmarks=pts,
            depth=raw[:, 2].astype(np.float32),
            box=(float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1])),
            score=self._score,
            pose=HeadPose(float(yaw), float(pitch), float(roll)),
            presence=self._presence,
            timestamp_ms=ts,
        )
        return self._held

    def _fade(self, ts: int, dt_ms: float) -> Face | None:
        if self._held is None:
            return None
        self._presence = max(0.0, self._presence - dt_ms / self.config.fade_ms)
        if self._presence <= 0.0:
            self._held = None  # the person stays remembered (_last_centre) for reacquisition
            return None
        return replace(self._held, presence=self._presence, timestamp_ms=ts)

    def _forget_target(self) -> None:
        self._window = None
        self._drop_mesh_face()
        self._last_centre = None
        self._held = None
        self._presence = 0.0
