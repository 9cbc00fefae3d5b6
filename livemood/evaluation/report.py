"""Presenting an evaluation: the text summary `livemood evaluate` prints and the per-frame plot it writes."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np

from livemood.config import UsageError
from livemood.evaluation.videos import BACKGROUND_GROW, LIP_SYNC_BAR, EvaluationReport
from livemood.models.expression import CLASSES

log = logging.getLogger(__name__)


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
