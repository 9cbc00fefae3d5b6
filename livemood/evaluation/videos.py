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

import logging
import math
from collections.abc import Iterator
from pathlib import Path

import cv2
import numpy as np

from livemood.config import DEFAULT_CLASSIFIER, EMOTIONS, Schedule, UsageError
from livemood.evaluation.metrics import (
    background_mask,
    expression_motion,
    expression_ratio,
    face_detail,
    lip_opening,
    pearson,
    psnr,
)
from livemood.evaluation.report import EvaluationReport, FrameSeries, write_plot
from livemood.face.align import skull_units, to_face_units
from livemood.face.tracker import FaceTracker, TrackerConfig
from livemood.models.expression import CLASSES, TARGET_CLASS, VALENCE_VECTOR, ExpressionClassifier
from livemood.video import VideoReader

log = logging.getLogger(__name__)




def _frames(source: VideoReader, output: VideoReader, max_frames: int | None, progress: bool
            ) -> Iterator[tuple[np.ndarray, int, np.ndarray, int]]:
    """Pairs of frames (source BGR, ms, output BGR, ms) until either video ends or `max_frames`."""
    from tqdm import tqdm

    known = [n for n in (source.declared_frames, output.declared_frames, max_frames) if n]
    with tqdm(total=min(known) if known else None, unit="frame", desc="evaluate", disable=None if progress else True,
              leave=False) as bar:
        done = 0  # not bar.n: a disabled bar does not count
        while max_frames is None or done < max_frames:
            a, b = source.read(), output.read()
            if a is None or b is None:
                return
            yield a[0], round(a[1] * 1e3), b[0], round(b[1] * 1e3)
            done += 1
            bar.update(1)


def load_classifier(name: str) -> ExpressionClassifier:
    """The named classifier, or UsageError if it is unknown or its weights are missing."""
    try:
        return ExpressionClassifier(name=name)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from e


def evaluate_videos(source: Path, output: Path, emotion: str | None, plot: Path | None, progress: bool = True, *,
                    max_frames: int | None = None, classifier: ExpressionClassifier | str = DEFAULT_CLASSIFIER,
                    tracker_config: TrackerConfig | None = None, keyframes: Schedule | None = None
                    ) -> EvaluationReport:
    """Compare an output video with the input it was made from; see the module docstring.

    `emotion` (one of `EMOTIONS`) names the target whose class probability is followed; `plot` is a PNG path for
    the per-frame chart, drawn with the `keyframes` the output was made with, if given, on a time axis. `max_frames`
    measures only the first frames (both videos are still counted to the end).
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
            classifier = load_classifier(classifier)
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
        write_plot(report, plot, keyframes)
    return report


def _measure(src: VideoReader, out: VideoReader, source: Path, output: Path, emotion: str | None,
             max_frames: int | None, progress: bool, classifier: ExpressionClassifier,
             tracker_config: TrackerConfig | None) -> EvaluationReport:
    crops_src: list[np.ndarray] = []  # (S, S) uint8 per face frame, S the classifier's input size
    crops_out: list[np.ndarray] = []
    face_at: list[int] = []  # indices of the compared frames with a face in the input
    lips_src: list[float] = []
    lips_out: list[float] = []
    psnr_db: list[float] = []
    times_ms: list[int] = []  # the input's frame times
    sse_total, count_total = 0.0, 0
    shapes_src, shapes_out = [], []  # (478, 2) face-unit landmarks of each video's own tracked face
    points_src, points_out = [], []  # (478, 3) the same in pixels with depth
    out_at: list[int] = []  # indices of the compared frames with a face tracked in the output
    detail = [0.0, 0.0]  # summed face detail (Laplacian variance in the input's face hull) of input and output
    with FaceTracker(tracker_config) as track_src, FaceTracker(tracker_config) as track_out:
        for i, (a, ms_a, b, ms_b) in enumerate(_frames(src, out, max_frames, progress)):
            times_ms.append(ms_a)
            face = track_src.track(a, ms_a)
            face_out = track_out.track(b, ms_b)
            if face is not None:
                face_at.append(i)
                crops_src.append(classifier.crop(a, face.landmarks))
                crops_out.append(classifier.crop(b, face.landmarks))  # scored where the input's face is
                shapes_src.append(to_face_units(face.landmarks))
                points_src.append(face.points)
                detail[0] += face_detail(a, face.landmarks)
                detail[1] += face_detail(b, face.landmarks)
                mask = background_mask(face.landmarks, a.shape)
                pixels = cv2.countNonZero(mask) * a.shape[2]
                sse = cv2.norm(a, b, cv2.NORM_L2SQR, mask=mask)
            else:  # no face: the whole frame is background
                pixels = a.size
                sse = cv2.norm(a, b, cv2.NORM_L2SQR)
            sse_total += sse
            count_total += pixels
            psnr_db.append(psnr(sse, pixels))
            lips_src.append(lip_opening(face.landmarks) if face is not None else math.nan)
            lips_out.append(lip_opening(face_out.landmarks) if face_out is not None else math.nan)
            if face_out is not None:
                shapes_out.append(to_face_units(face_out.landmarks))
                points_out.append(face_out.points)
                out_at.append(i)
    n = len(psnr_db)
    source_frames, output_frames = src.count_rest(), out.count_rest()

    probs_src = classifier.probabilities(crops_src)  # (F, 7)
    probs_out = classifier.probabilities(crops_out)
    target = TARGET_CLASS[emotion] if emotion is not None else None

    def per_frame(values: np.ndarray, at: list[int] = face_at) -> np.ndarray:
        full = np.full((n, *values.shape[1:]), math.nan)
        full[at] = values
        return full

    motion_src, motion_out = expression_motion(np.array(shapes_src)), expression_motion(np.array(shapes_out))

    t_src = probs_src[:, CLASSES.index(target)] if target else np.full(len(face_at), math.nan)
    t_out = probs_out[:, CLASSES.index(target)] if target else np.full(len(face_at), math.nan)
    series = FrameSeries(
        target_source=per_frame(t_src), target_output=per_frame(t_out),
        valence_source=per_frame(probs_src @ VALENCE_VECTOR), valence_output=per_frame(probs_out @ VALENCE_VECTOR),
        lip_source=np.array(lips_src), lip_output=np.array(lips_out), background_psnr_db=np.array(psnr_db),
        time_s=(np.array(times_ms, dtype=np.float64) - (times_ms[0] if times_ms else 0)) / 1e3,
        probs_source=per_frame(probs_src), probs_output=per_frame(probs_out),
        motion_source=per_frame(motion_src), motion_output=per_frame(motion_out, out_at))
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
        lip_correlation=pearson(lip_a, lip_b),
        lip_mean_abs_diff=float(np.mean(np.abs(lip_a - lip_b))) if both.any() else None,
        background_psnr_db=psnr(sse_total, count_total),
        background_psnr_min_db=float(np.min(psnr_db)) if psnr_db else math.nan,
        face_detail_ratio=detail[1] / detail[0] if detail[0] > 0 else None,
        mean_shape_source=np.mean(shapes_src, axis=0) if shapes_src else None,
        mean_shape_output=np.mean(shapes_out, axis=0) if shapes_out else None,
        expressiveness_ratio=expression_ratio(motion_src, motion_out),
        expressiveness_ratio_pose_free=expression_ratio(
            *(expression_motion(skull_units(np.array(p), points_src[0])) for p in (points_src, points_out)))
        if points_src else None,
        series=series,
    )


