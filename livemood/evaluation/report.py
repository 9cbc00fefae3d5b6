"""An evaluation's result: the report `evaluate_videos` fills in, the text `livemood evaluate` prints and the
per-frame plot it writes."""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from livemood.config import UsageError
from livemood.evaluation.metrics import BACKGROUND_GROW, LIP_SYNC_BAR
from livemood.models.expression import CLASSES

log = logging.getLogger(__name__)


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
    face_detail_ratio: float | None  # output / input, Laplacian variance inside the input's face hull
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
    return "\n".join(lines)


def write_plot(report: EvaluationReport, path: Path) -> None:
    """A PNG with the per-frame target-class probability (the valence proxy without a target), input vs output,
    over the inner-lip opening of both videos. Uses matplotlib's Agg canvas directly: no pyplot, no display."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as e:
        raise UsageError("writing a plot needs matplotlib: pip install matplotlib") from e
    s = report.series
    x = np.arange(report.frames_compared)
    fig = Figure(figsize=(10, 6), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True)
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
    bottom.plot(x, s.lip_source, label="input", color="tab:blue")
    bottom.plot(x, s.lip_output, label="output", color="tab:orange", linestyle="--")
    bottom.set_ylabel("inner-lip opening (face heights)")
    bottom.set_xlabel("frame")
    bottom.set_title(f"lip opening correlation {_fmt(report.lip_correlation, '.3f')}")
    bottom.legend(loc="upper right")
    try:
        fig.savefig(path, format="png")
    except OSError as e:
        raise UsageError(f"cannot write plot {path}: {e}") from e
    log.info("plot written to %s", path)
