"""An evaluation's result: the report `evaluate_videos` fills in, the text `livemood evaluate` prints and the
per-frame plot it writes."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from livemood.atomic import AtomicFile, cannot_write
from livemood.config import Schedule, UsageError
from livemood.evaluation.metrics import BACKGROUND_GROW, LIP_SYNC_BAR
from livemood.models.expression import CLASSES, TARGET_CLASS

if TYPE_CHECKING:
    from matplotlib.axes import Axes

log = logging.getLogger(__name__)


INF_JSON = "inf"  # how an infinite PSNR is written in JSON (which has no infinity)
# The keyframed plot's probability curves are moving means over this many seconds: per frame, a classifier flips
# between near 0 and near 1 on a speaking face, which hides where a class rose.
SMOOTH_S = 0.5
# One colour per emotion, shared by the keyframe lane and its class's probability curves.
EMOTION_COLOURS = {"neutral": "tab:gray", "happy": "tab:orange", "sad": "tab:blue", "angry": "tab:red",
                   "surprised": "tab:purple", "fearful": "tab:green", "disgusted": "tab:olive",
                   "contempt": "tab:pink"}


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
    time_s: np.ndarray  # the input's frame times, seconds from its first frame
    probs_source: np.ndarray  # (N, 7) class probabilities in CLASSES order
    probs_output: np.ndarray
    motion_source: np.ndarray  # expression motion around each video's own neutral (metrics.expression_motion)
    motion_output: np.ndarray


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
    face_detail_ratio: float | None  # output / input, Laplacian variance inside the input's face hull
    expressiveness_ratio: float | None  # RMS expression motion around the neutral, output / input
    expressiveness_ratio_pose_free: float | None  # the same with the head's pose taken out in 3D
    mean_shape_source: np.ndarray | None = field(repr=False)  # (478, 2) mean landmarks in face units
    mean_shape_output: np.ndarray | None = field(repr=False)
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
            "face_detail_ratio": _num(self.face_detail_ratio),
            "expressiveness_ratio": _num(self.expressiveness_ratio),
            "expressiveness_ratio_pose_free": _num(self.expressiveness_ratio_pose_free),
        }
        if per_frame:
            out["per_frame"] = {name: _per_frame_json(getattr(self.series, name))
                                for name in FrameSeries.__dataclass_fields__}
        return out

    def to_json(self, per_frame: bool = False) -> str:
        """The report as a JSON document (strict: no NaN or Infinity literals)."""
        return json.dumps(self.to_dict(per_frame), indent=2, allow_nan=False)


def _per_frame_json(values: np.ndarray) -> list[float | str | None] | dict[str, list[float | str | None]]:
    """A per-frame series as a list; (N, 7) class probabilities as one list per class."""
    if values.ndim == 2:
        return {name: [_num(v) for v in values[:, i]] for i, name in enumerate(CLASSES)}
    return [_num(v) for v in values]


def _num(value: float | None) -> float | str | None:
    if value is None or math.isnan(value):
        return None
    if math.isinf(value):
        return INF_JSON if value > 0 else "-" + INF_JSON
    return round(float(value), 6)


def _fmt(value: float | None, spec: str = ".3f") -> str:
    if value is None or math.isnan(value):
        return "n/a"
    return "inf" if math.isinf(value) else format(value, spec)


def format_report(report: EvaluationReport) -> str:
    """A human-readable summary, one fact per line."""
    r = report
    kept = "all kept" if r.frame_counts_match else "COUNTS DIFFER: only the common frames were compared"
    lines = [
        f"source: {r.source} ({r.source_frames} frames)",
        f"output: {r.output} ({r.output_frames} frames; {kept})",
        f"compared {r.frames_compared} frames, face found in {r.face_frames}; classifier {r.classifier}",
    ]
    if r.target_class is not None:
        lines.append(f"target {r.emotion} (class {r.target_class}): {_fmt(r.target_source_mean)} -> "
                     f"{_fmt(r.target_output_mean)} (shift {_fmt(r.target_shift, '+.3f')}), "
                     f"rose in {_fmt(None if r.target_rise_fraction is None else 100 * r.target_rise_fraction, '.0f')}"
                     "% of face frames")
    else:
        lines.append("target: none given (--emotion); no target-class shift")
    gain = r.largest_gain
    if gain is not None:
        lines.append(f"largest gain: {gain[0]} {gain[1]:+.3f}")
    lines.append(f"valence proxy: {_fmt(r.valence_source_mean, '+.3f')} -> {_fmt(r.valence_output_mean, '+.3f')} "
                 f"(shift {_fmt(r.valence_shift, '+.3f')})")
    if r.mean_probs_source is not None and r.mean_probs_output is not None:
        lines.append("mean class probabilities (source -> output):")
        width = max(map(len, CLASSES))
        lines += [f"  {c:<{width}}  {p:.3f} -> {q:.3f}"
                  for c, p, q in zip(CLASSES, r.mean_probs_source, r.mean_probs_output, strict=True)]
    verdict = {None: "not measurable", True: "kept", False: "NOT kept"}[r.lip_sync_kept]
    lines.append(f"lip opening correlation: {_fmt(r.lip_correlation, '.4f')} over {r.lip_frames} frames "
                 f"(bar >= {LIP_SYNC_BAR:g}: {verdict}); mean |difference| {_fmt(r.lip_mean_abs_diff, '.4f')} "
                 "face heights")
    lines.append(f"background PSNR: {_fmt(r.background_psnr_db, '.2f')} dB over all frames, worst frame "
                 f"{_fmt(r.background_psnr_min_db, '.2f')} dB (outside the face grown by {BACKGROUND_GROW:.0%})")
    lines.append(f"face detail (output / input, Laplacian variance inside the face): {_fmt(r.face_detail_ratio)}")
    lines.append(f"expressiveness (output / input, RMS motion of brows, lids and lip corners around the neutral): "
                 f"{_fmt(r.expressiveness_ratio)} in face units; {_fmt(r.expressiveness_ratio_pose_free)} with the "
                 "head's pose taken out (nods and turns are not counted)")
    return "\n".join(lines)


@dataclass(frozen=True)
class KeyframeSpan:
    """One keyframe's stretch of the video and how its emotion's class came out there."""

    start_s: float
    end_s: float
    emotion: str
    intensity: float
    target_class: str
    frames: int  # face frames measured: from the end of the keyframe's ramp to the next keyframe
    source_mean: float | None  # mean probability of `target_class` over those frames
    output_mean: float | None

    @property
    def shift(self) -> float | None:
        return None if self.source_mean is None or self.output_mean is None else self.output_mean - self.source_mean

    def to_dict(self) -> dict[str, object]:
        return {"start_s": _num(self.start_s), "end_s": _num(self.end_s), "emotion": self.emotion,
                "intensity": self.intensity, "target_class": self.target_class, "frames": self.frames,
                "source_mean": _num(self.source_mean), "output_mean": _num(self.output_mean),
                "shift": _num(self.shift)}


@dataclass(frozen=True)
class KeyframeSpans:
    """`evaluate --keyframes`: how each keyframe's class came out over its stretch."""

    origin: str  # the schedule's, e.g. "keyframes from take3.csv"
    spans: tuple[KeyframeSpan, ...]

    def to_dict(self) -> dict[str, object]:
        return {"origin": self.origin, "spans": [span.to_dict() for span in self.spans]}

    def summary(self) -> str:
        """One line per keyframe: its stretch, its class's mean probability input -> output and the shift."""
        lines = [f"{self.origin} (each keyframe's class once its ramp is over, input -> output):"]
        lines += [f"  {k.start_s:.2f}-{k.end_s:.2f} s  {k.emotion} {k.intensity:.2f}: P({k.target_class}) "
                  f"{_fmt(k.source_mean)} -> {_fmt(k.output_mean)} (shift {_fmt(k.shift, '+.3f')}) over "
                  f"{k.frames} frames" for k in self.spans]
        return "\n".join(lines)


def keyframe_spans(report: EvaluationReport, keyframes: Schedule) -> KeyframeSpans:
    """Each keyframe's stretch with the mean probability of its emotion's class, input and output, measured once
    its ramp is over (`Controls.ramp_s` after the keyframe) until the next keyframe."""
    s = report.series
    spans = []
    for start, end, controls in keyframes.spans(_end_s(s.time_s)):
        target = TARGET_CLASS[controls.emotion]
        column = CLASSES.index(target)
        settled = (s.time_s >= start + controls.ramp_s) & (s.time_s < end) & np.isfinite(s.probs_source[:, column])
        count = int(settled.sum())
        spans.append(KeyframeSpan(start, end, controls.emotion, controls.intensity, target, count,
                                  float(s.probs_source[settled, column].mean()) if count else None,
                                  float(s.probs_output[settled, column].mean()) if count else None))
    return KeyframeSpans(keyframes.origin, tuple(spans))


def _end_s(time_s: np.ndarray) -> float:
    """Where the last frame ends: its time plus the typical frame step (seconds)."""
    if len(time_s) < 2:
        return float(time_s[-1]) + 1.0 if len(time_s) else 0.0
    return float(time_s[-1] + np.median(np.diff(time_s)))


def _moving_mean(values: np.ndarray, window: int) -> np.ndarray:
    """Centred mean over `window` frames, skipping NaN (no face); NaN where the window has no value."""
    kernel = np.ones(window)
    finite = np.isfinite(values)
    total = np.convolve(np.where(finite, values, 0.0), kernel, mode="same")
    count = np.convolve(finite.astype(np.float64), kernel, mode="same")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / count, np.nan)


def write_plot(report: EvaluationReport, path: Path, keyframes: Schedule | None = None) -> None:
    """A PNG with the per-frame target-class probability (the valence proxy without a target), input vs output,
    over the inner-lip opening of both videos. With `keyframes`, on a time axis in seconds: the probability of each
    keyframed emotion's class, and under it a lane with the keyframes (a span per keyframe in its emotion's colour,
    its height the intensity, its slopes the ramps). Uses matplotlib's Agg canvas directly: no pyplot, no display."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UsageError("writing a plot needs matplotlib: pip install matplotlib") from e
    s = report.series
    if keyframes is not None:
        fig = Figure(figsize=(11, 8), dpi=100, layout="constrained")
        top, lane, bottom = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": (3, 1.3, 2)})
        _draw_keyframed(top, lane, report, keyframes)
        _draw_lips(bottom, report, s.time_s, "time (s)")
    else:
        fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
        top, bottom = fig.subplots(2, 1, sharex=True)
        _draw_target(top, report)
        _draw_lips(bottom, report, np.arange(report.frames_compared), "frame")
    FigureCanvasAgg(fig)
    try:
        with AtomicFile(path) as tmp:
            fig.savefig(tmp, format="png")
    except FileNotFoundError as e:  # what the user asked for, not a failing disk
        raise UsageError(f"cannot write plot {path}: its folder does not exist") from e
    except OSError as e:
        raise cannot_write(path, e) from e
    log.info("plot written to %s", path)


def _draw_target(top: Axes, report: EvaluationReport) -> None:
    s = report.series
    x = np.arange(report.frames_compared)
    if report.target_class is not None:
        top.plot(x, s.target_source, label="input", color="tab:blue")
        top.plot(x, s.target_output, label="output", color="tab:orange")
        top.set_ylabel(f"P({report.target_class})")
        top.set_ylim(0.0, 1.0)
        title = f"target {report.emotion}: mean shift {_fmt(report.target_shift, '+.3f')}"
    else:
        top.plot(x, s.valence_source, label="input", color="tab:blue")
        top.plot(x, s.valence_output, label="output", color="tab:orange")
        top.set_ylabel("valence proxy")
        title = f"no target emotion: valence shift {_fmt(report.valence_shift, '+.3f')}"
    top.legend(loc="upper right")
    top.set_title(f"{title} ({Path(report.output).name} vs {Path(report.source).name})")


def _draw_lips(bottom: Axes, report: EvaluationReport, x: np.ndarray, xlabel: str) -> None:
    s = report.series
    bottom.plot(x, s.lip_source, label="input", color="tab:blue")
    bottom.plot(x, s.lip_output, label="output", color="tab:orange", linestyle="--")
    bottom.set_ylabel("inner-lip opening (face heights)")
    bottom.set_xlabel(xlabel)
    bottom.set_title(f"lip opening correlation {_fmt(report.lip_correlation, '.3f')}")
    bottom.legend(loc="upper right")


def _draw_keyframed(top: Axes, lane: Axes, report: EvaluationReport, keyframes: Schedule) -> None:
    """Each keyframed emotion's class probability over time (output solid, input dotted) above the keyframe lane."""
    s = report.series
    spans = keyframes.spans(_end_s(s.time_s))
    colour_of: dict[str, str] = {}  # class -> the colour of the first keyframed emotion that targets it
    for _, _, controls in spans:
        colour_of.setdefault(TARGET_CLASS[controls.emotion], EMOTION_COLOURS[controls.emotion])
    window = max(1, round(SMOOTH_S / max(_end_s(s.time_s) / max(len(s.time_s), 1), 1e-6)))  # frames
    for target, colour in colour_of.items():
        column = CLASSES.index(target)
        top.plot(s.time_s, s.probs_output[:, column], color=colour, linewidth=0.6, alpha=0.3)
        top.plot(s.time_s, _moving_mean(s.probs_output[:, column], window), color=colour, linewidth=2.0,
                 label=f"P({target})")
        top.plot(s.time_s, _moving_mean(s.probs_source[:, column], window), color=colour, linewidth=1.2,
                 linestyle=":")
    top.plot([], [], color="black", linewidth=1.2, linestyle=":", label="input")
    for start, _, controls in spans[1:]:
        top.axvline(start, color=EMOTION_COLOURS[controls.emotion], linewidth=0.8, linestyle="--", alpha=0.7)
    top.set_ylim(0.0, 1.18)  # room for the legend above the curves
    top.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
    top.set_ylabel(f"class probability\n({SMOOTH_S:g} s mean)")
    top.legend(loc="upper left", fontsize="small", ncol=len(colour_of) + 1, framealpha=0.9)
    top.set_title(f"{keyframes.origin}: class probabilities, output (solid; per frame faint) vs input (dotted) "
                  f"({Path(report.output).name} vs {Path(report.source).name})")
    for i, (start, end, controls) in enumerate(spans):
        colour = EMOTION_COLOURS[controls.emotion]
        ramp_out = spans[i + 1][2].ramp_s if i + 1 < len(spans) else 0.0
        lane.axvspan(start, end, color=colour, alpha=0.12, linewidth=0)
        # The intensity rises within this keyframe's ramp time and falls within the next one's (`Ramp`).
        lane.fill([start, min(start + controls.ramp_s, end + ramp_out), end, end + ramp_out],
                  [0.0, controls.intensity, controls.intensity, 0.0], color=colour, alpha=0.55, linewidth=0)
        lane.text((start + end) / 2, 1.08, f"{controls.emotion} {controls.intensity:g}", ha="center", va="bottom",
                  fontsize="small", color=colour, clip_on=True)
    lane.set_ylim(0.0, 1.45)
    lane.set_yticks([0.0, 0.5, 1.0])
    lane.set_ylabel("keyframes\n(intensity)")
    lane.set_xlim(0.0, _end_s(s.time_s))
