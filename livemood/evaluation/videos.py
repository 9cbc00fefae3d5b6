"""`livemood evaluate`: how far an output video moved the face's expression, and what it kept.

Both videos are decoded with PyAV in lockstep, frame by frame. The face is tracked in the *input* with one
`FaceTracker`, and both frames are scored at that position: the output shows the same person in the same place, so
scoring it where the input's face is measures the change itself, not a difference in tracking. The output is also
tracked on its own, only to measure its lips. Per frame:

* class probabilities of a FER2013 classifier (`livemood.models.expression`, the default or the one named) on the
  input's and the output's face crop;
  from them the target class's probability and a valence proxy (probabilities · `VALENCE`). This mirrors the
  automated scoring of Wav2Lip-Emotion (a classifier or valence model run on source and generated video), without
  a destination video, so it reports shifts rather than their Δvalence ratio;
* the inner-lip opening (landmarks 13↔14 over the face height 10↔152) in each video, tracked separately; lip sync
  is kept when the two series correlate (Pearson r ≥ `LIP_SYNC_BAR`);
* the squared error outside the input's face hull grown by `BACKGROUND_GROW` face sizes. An engine that only
  touches the face leaves that background alone: PSNR infinite for a lossless output; a lossy one adds the
  encoder's own noise (re-encoding talk_a.mp4 with H.264 at CRF 18 alone gives 40 dB, and moves the mean class
  probabilities by up to 0.015: the noise floor of these measurements).

Every frame of both videos is counted, so dropped or added frames show up as different counts.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np

from livemood.config import DEFAULT_CLASSIFIER, EMOTIONS, UsageError
from livemood.face.tracker import FaceTracker, TrackerConfig
from livemood.models.expression import CLASSES, TARGET_CLASS, VALENCE, ExpressionClassifier

log = logging.getLogger(__name__)

UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14  # face-mesh landmarks on the inner lip line, at the midline
FOREHEAD_TOP, CHIN = 10, 152  # face-mesh landmarks spanning the face height, the lip opening's unit
BACKGROUND_GROW = 0.15  # face sizes (larger side of the landmark box) the hull is grown by before "background"
GROW_DIRECTIONS = 32  # the growth disc is approximated by a polygon with this many corners
LIP_SYNC_BAR = 0.95  # Pearson r of the lip openings (input vs output) at which lip sync counts as kept
MIN_LIP_FRAMES = 3  # frames with a face in both videos needed for a correlation
PSNR_PEAK = 255.0  # 8-bit pixels
CLASSIFY_BATCH = 256  # face crops per classifier call
FALLBACK_FPS = 25.0  # frames per second assumed for timestamps when a stream states no rate
VALENCE_VECTOR = np.array([VALENCE[c] for c in CLASSES])  # (7,) valence of each class, CLASSES order
INF_JSON = "inf"  # how an infinite PSNR is written in JSON (which has no infinity)


@dataclass(frozen=True, eq=False)
class FrameSeries:
    """Per-frame measurements over the compared frames, (N,) float64 each; NaN where no face was tracked."""

    target_source: np.ndarray  # target-class probability (NaN everywhere without a target emotion)
    target_output: np.ndarray
    valence_source: np.ndarray
    valence_output: np.ndarray
    lip_source: np.ndarray  # inner-lip opening in face heights
    lip_output: np.ndarray
    background_psnr_db: np.ndarray  # inf where the background is identical


@dataclass(frozen=True, eq=False)
class EvaluationReport:
    """What `evaluate_videos` measured; see the module docstring. Means are over frames with a face in the input
    (None when there were none); `target_*` are None without a target emotion."""

    source: str
    output: str
    classifier: str  # the expression classifier's name (`livemood.models.expression.CLASSIFIERS`)
    emotion: str | None
    target_class: str | None
    source_frames: int  # every frame of each video, counted to the end even past `max_frames`
    output_frames: int
    frames_compared: int  # frames decoded from both videos and measured
    face_frames: int  # compared frames with a face in the input
    lip_frames: int  # compared frames with a face tracked in both videos
    mean_probs_source: tuple[float, ...] | None  # (7,) in CLASSES order
    mean_probs_output: tuple[float, ...] | None
    target_source_mean: float | None
    target_output_mean: float | None
    target_shift: float | None  # output mean - input mean
    target_rise_fraction: float | None  # fraction of face frames where the target probability rose
    valence_source_mean: float | None
    valence_output_mean: float | None
    valence_shift: float | None
    lip_correlation: float | None  # Pearson r; None with too few frames or a constant series
    lip_mean_abs_diff: float | None  # face heights
    background_psnr_db: float  # from the mean squared error over all compared frames' background pixels
    background_psnr_min_db: float  # the worst single frame
    series: FrameSeries = field(repr=False)

    @property
    def frame_counts_match(self) -> bool:
        return self.source_frames == self.output_frames

    @property
    def lip_sync_kept(self) -> bool | None:
        return None if self.lip_correlation is None else self.lip_correlation >= LIP_SYNC_BAR

    @property
    def largest_gain(self) -> tuple[str, float] | None:
        """The class whose mean probability rose most, and by how much; None if none rose."""
        if self.mean_probs_source is None or self.mean_probs_output is None:
            return None
        gain = np.subtract(self.mean_probs_output, self.mean_probs_source)
        i = int(np.argmax(gain))
        return (CLASSES[i], float(gain[i])) if gain[i] > 0 else None

    def to_dict(self, per_frame: bool = False) -> dict[str, object]:
        """JSON-ready values: NaN becomes None and an infinite PSNR the string "inf"."""
        probs = {
            name: None if values is None else dict(zip(CLASSES, map(_num, values), strict=True))
            for name, values in (("source", self.mean_probs_source), ("output", self.mean_probs_output))
        }
        gain = self.largest_gain
        out: dict[str, object] = {
            "source": self.source,
            "output": self.output,
            "classifier": self.classifier,
            "emotion": self.emotion,
            "target_class": self.target_class,
            "frames": {"source": self.source_frames, "output": self.output_frames, "match": self.frame_counts_match,
                       "compared": self.frames_compared, "with_face": self.face_frames},
            "mean_probabilities": probs,
            "largest_gain": None if gain is None else {"class": gain[0], "shift": _num(gain[1])},
            "target": {"source_mean": _num(self.target_source_mean), "output_mean": _num(self.target_output_mean),
                       "shift": _num(self.target_shift), "rise_fraction": _num(self.target_rise_fraction)},
            "valence": {"source_mean": _num(self.valence_source_mean),
                        "output_mean": _num(self.valence_output_mean), "shift": _num(self.valence_shift)},
            "lip_sync": {"correlation": _num(self.lip_correlation), "bar": LIP_SYNC_BAR, "kept": self.lip_sync_kept,
                         "mean_abs_diff": _num(self.lip_mean_abs_diff), "frames": self.lip_frames},
            "background_psnr_db": {"overall": _num(self.background_psnr_db),
                                   "worst_frame": _num(self.background_psnr_min_db)},
        }
        if per_frame:
            out["per_frame"] = {name: [_num(v) for v in getattr(self.series, name)]
                                for name in FrameSeries.__dataclass_fields__}
        return out

    def to_json(self, per_frame: bool = False) -> str:
        """The report as a JSON document (strict: no NaN or Infinity literals)."""
        return json.dumps(self.to_dict(per_frame), indent=2, allow_nan=False)


def _num(value: float | None) -> float | str | None:
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return INF_JSON if value > 0 else "-" + INF_JSON
    return round(float(value), 6)


class VideoReader:
    """One video file decoded frame by frame as BGR, with timestamps in ms; counts every frame it decodes."""

    def __init__(self, path: Path, role: str) -> None:
        if not path.exists():
            raise UsageError(f"{role} file not found: {path}")
        if not path.is_file():
            raise UsageError(f"{role} is not a file: {path}")
        try:
            self._container = av.open(str(path))
        except (av.error.FFmpegError, OSError, ValueError) as e:
            raise UsageError(f"cannot read {role} {path}: {e}") from e
        if not self._container.streams.video:
            self._container.close()
            raise UsageError(f"{role} {path} has no video stream")
        self._stream = self._container.streams.video[0]
        self._stream.thread_type = "AUTO"
        ctx = self._stream.codec_context
        self.size = (ctx.width, ctx.height)
        self.fps = float(self._stream.average_rate or self._stream.guessed_rate or Fraction(FALLBACK_FPS))
        self.declared_frames = self._stream.frames or None  # container metadata, may be absent or wrong
        self.count = 0
        self._frames = self._container.decode(self._stream)

    def next(self) -> tuple[np.ndarray, int] | None:
        """The next (H, W, 3) uint8 BGR frame and its time in ms, or None at the end."""
        frame = self._next_frame()
        if frame is None:
            return None
        ms = frame.time * 1000.0 if frame.time is not None else (self.count - 1) * 1000.0 / self.fps
        return frame.to_ndarray(format="bgr24"), round(ms)

    def count_rest(self) -> int:
        """Decode (without converting) the remaining frames, so that `count` covers the whole video."""
        while self._next_frame() is not None:
            pass
        return self.count

    def _next_frame(self) -> av.VideoFrame | None:
        try:
            frame = next(self._frames, None)
        except av.error.FFmpegError as e:
            log.warning("decoding stopped after %d frames: %s", self.count, e)
            frame = None
        if frame is not None:
            self.count += 1
        return frame

    def close(self) -> None:
        self._container.close()


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


def _psnr(sse: float, count: int) -> float:
    if count == 0:
        return math.nan
    mse = sse / count
    return math.inf if mse == 0 else 10.0 * math.log10(PSNR_PEAK**2 / mse)


def _frames(source: VideoReader, output: VideoReader, max_frames: int | None, progress: bool
            ) -> Iterator[tuple[np.ndarray, int, np.ndarray, int]]:
    """Pairs of frames (source BGR, ms, output BGR, ms) until either video ends or `max_frames`."""
    from tqdm import tqdm

    known = [n for n in (source.declared_frames, output.declared_frames, max_frames) if n]
    with tqdm(total=min(known) if known else None, unit="frame", desc="evaluate", disable=None if progress else True,
              leave=False) as bar:
        done = 0  # not bar.n: a disabled bar does not count
        while max_frames is None or done < max_frames:
            a, b = source.next(), output.next()
            if a is None or b is None:
                return
            yield a[0], a[1], b[0], b[1]
            done += 1
            bar.update(1)


def evaluate_videos(source: Path, output: Path, emotion: str | None, plot: Path | None, progress: bool = True, *,
                    max_frames: int | None = None, classifier: ExpressionClassifier | str = DEFAULT_CLASSIFIER,
                    tracker_config: TrackerConfig | None = None) -> EvaluationReport:
    """Compare an output video with the input it was made from; see the module docstring.

    `emotion` (one of `EMOTIONS`) names the target whose class probability is followed; `plot` is a PNG path for
    the per-frame chart. `max_frames` measures only the first frames (both videos are still counted to the end).
    `classifier` is a loaded classifier or the name of one. Raises UsageError for an unknown classifier or missing
    classifier weights, missing or unreadable files, videos without a video stream or of different frame sizes,
    an unknown emotion, a plot folder that does not exist, or `max_frames` < 1. Different frame counts are not an
    error: the common frames are measured and both counts reported.
    """
    if emotion is not None and emotion not in EMOTIONS:
        raise UsageError(f"unknown emotion {emotion!r}; choose one of: {', '.join(EMOTIONS)}")
    if max_frames is not None and max_frames < 1:
        raise UsageError(f"max_frames must be at least 1, got {max_frames}")
    if plot is not None and not plot.resolve().parent.is_dir():
        raise UsageError(f"plot folder does not exist: {plot.resolve().parent}")
    src = VideoReader(source, "source")
    try:
        out = VideoReader(output, "output")
    except UsageError:
        src.close()
        raise
    try:
        if src.size != out.size:
            raise UsageError(f"frame sizes differ: source {src.size[0]}x{src.size[1]}, "
                             f"output {out.size[0]}x{out.size[1]}; evaluate compares the same pixels")
        if isinstance(classifier, str):
            try:
                classifier = ExpressionClassifier(name=classifier)
            except (FileNotFoundError, ValueError) as e:
                raise UsageError(str(e)) from e
        report = _measure(src, out, source, output, emotion, max_frames, progress, classifier, tracker_config)
    finally:
        src.close()
        out.close()
    if not report.frame_counts_match:
        log.warning("frame counts differ: source %d, output %d; compared the first %d", report.source_frames,
                    report.output_frames, report.frames_compared)
    if report.face_frames == 0:
        log.warning("no face found in %s: expression and lip measurements are empty", source)
    if plot is not None:
        from livemood.evaluation.report import write_plot

        write_plot(report, plot)
    return report


def _measure(src: VideoReader, out: VideoReader, source: Path, output: Path, emotion: str | None,
             max_frames: int | None, progress: bool, classifier: ExpressionClassifier,
             tracker_config: TrackerConfig | None) -> EvaluationReport:
    crops_src: list[np.ndarray] = []  # (S, S) uint8 per face frame, S the classifier's input size
    crops_out: list[np.ndarray] = []
    face_at: list[int] = []  # indices of the compared frames with a face in the input
    lips_src: list[float] = []
    lips_out: list[float] = []
    psnr: list[float] = []
    sse_total, count_total = 0.0, 0
    with FaceTracker(tracker_config) as track_src, FaceTracker(tracker_config) as track_out:
        for i, (a, ms_a, b, ms_b) in enumerate(_frames(src, out, max_frames, progress)):
            face = track_src.track(a, ms_a)
            face_out = track_out.track(b, ms_b)
            if face is not None:
                face_at.append(i)
                crops_src.append(classifier.crop(a, face.landmarks))
                crops_out.append(classifier.crop(b, face.landmarks))  # scored where the input's face is
                mask = background_mask(face.landmarks, a.shape)
                pixels = cv2.countNonZero(mask) * a.shape[2]
                sse = cv2.norm(a, b, cv2.NORM_L2SQR, mask=mask)
            else:  # no face: the whole frame is background
                pixels = a.size
                sse = cv2.norm(a, b, cv2.NORM_L2SQR)
            sse_total += sse
            count_total += pixels
            psnr.append(_psnr(sse, pixels))
            lips_src.append(lip_opening(face.landmarks) if face is not None else math.nan)
            lips_out.append(lip_opening(face_out.landmarks) if face_out is not None else math.nan)
    n = len(psnr)
    source_frames, output_frames = src.count_rest(), out.count_rest()

    probs_src = _classify(classifier, crops_src)  # (F, 7)
    probs_out = _classify(classifier, crops_out)
    target = TARGET_CLASS[emotion] if emotion is not None else None

    def per_frame(values: np.ndarray) -> np.ndarray:
        full = np.full(n, math.nan)
        full[face_at] = values
        return full

    t_src = probs_src[:, CLASSES.index(target)] if target else np.full(len(face_at), math.nan)
    t_out = probs_out[:, CLASSES.index(target)] if target else np.full(len(face_at), math.nan)
    series = FrameSeries(
        target_source=per_frame(t_src), target_output=per_frame(t_out),
        valence_source=per_frame(probs_src @ VALENCE_VECTOR), valence_output=per_frame(probs_out @ VALENCE_VECTOR),
        lip_source=np.array(lips_src), lip_output=np.array(lips_out), background_psnr_db=np.array(psnr))
    has_face = bool(face_at)
    has_target = has_face and target is not None

    def mean(values: np.ndarray, valid: bool) -> float | None:
        return float(np.mean(values)) if valid else None

    both = np.isfinite(series.lip_source) & np.isfinite(series.lip_output)
    lip_a, lip_b = series.lip_source[both], series.lip_output[both]
    v_src, v_out = mean(probs_src @ VALENCE_VECTOR, has_face), mean(probs_out @ VALENCE_VECTOR, has_face)
    return EvaluationReport(
        source=str(source), output=str(output), classifier=classifier.name, emotion=emotion, target_class=target,
        source_frames=source_frames, output_frames=output_frames, frames_compared=n, face_frames=len(face_at),
        lip_frames=int(both.sum()),
        mean_probs_source=tuple(map(float, probs_src.mean(axis=0))) if has_face else None,
        mean_probs_output=tuple(map(float, probs_out.mean(axis=0))) if has_face else None,
        target_source_mean=mean(t_src, has_target), target_output_mean=mean(t_out, has_target),
        target_shift=mean(t_out - t_src, has_target),
        target_rise_fraction=mean((t_out > t_src).astype(np.float64), has_target),
        valence_source_mean=v_src, valence_output_mean=v_out,
        valence_shift=None if v_src is None or v_out is None else v_out - v_src,
        lip_correlation=_pearson(lip_a, lip_b),
        lip_mean_abs_diff=float(np.mean(np.abs(lip_a - lip_b))) if both.any() else None,
        background_psnr_db=_psnr(sse_total, count_total),
        background_psnr_min_db=float(np.min(psnr)) if psnr else math.nan,
        series=series,
    )


def _classify(classifier: ExpressionClassifier, crops: list[np.ndarray]) -> np.ndarray:
    """(F, 7) probabilities for F crops, in batches."""
    if not crops:
        return np.zeros((0, len(CLASSES)))
    stack = np.stack(crops)
    return np.concatenate([classifier.probabilities(stack[i:i + CLASSIFY_BATCH]).astype(np.float64)
                           for i in range(0, len(stack), CLASSIFY_BATCH)])


def _pearson(a: np.ndarray, b: np.ndarray) -> float | None:
    """Pearson r, or None with too few points or a constant series (r undefined), unless the series are equal."""
    if len(a) < MIN_LIP_FRAMES:
        return None
    if np.array_equal(a, b):
        return 1.0
    da, db = a - a.mean(), b - b.mean()
    denom = math.sqrt(float(da @ da) * float(db @ db))
    return None if denom == 0 else float(da @ db) / denom
