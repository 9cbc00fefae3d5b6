"""`livemood evaluate --reference REAL`: how far an edit went compared with the real actor (the paper's idea).

A real take REAL of the same person saying the same sentence with the target emotion (MEAD's layout gives one
per emotion) sets the scale. Its timing differs from the input's, so it is compared through means over frames:

* reach = (P_out - P_in) / (P_real - P_in) for the target class's mean probability and for the valence proxy:
  1 means "moved the classifier as far as the actor did", 0 "not at all". REAL is scored with the same
  classifier on its own tracked face. When the actor barely moved the classifier (|P_real - P_in| below
  `MIN_REACH_SPAN`) the ratio is meaningless and reported as None;
* the landmark change: the mean face-unit shape of OUT minus that of IN, against REAL's minus IN's, over the brows,
  lids, cheeks and lip corners (`livemood.face.regions`): the cosine of the two changes (direction: 1 = the same
  way) and their magnitude ratio (1 = as large). The inner-lip opening is left out: it stays the speaker's.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from livemood.config import UsageError
from livemood.evaluation.report import EvaluationReport
from livemood.face.align import to_face_units
from livemood.face.regions import EXPRESSION_POINTS, REGIONS
from livemood.face.tracker import FaceTracker, TrackerConfig
from livemood.models.expression import CLASSES, VALENCE_VECTOR, ExpressionClassifier
from livemood.video import VideoReader

MIN_REACH_SPAN = 0.02  # |P_real - P_in| (probability or valence) below which a reach is not reported


@dataclass(frozen=True)
class ReferenceScores:
    """What `compare_with_reference` measured; None where it is not measurable."""

    reference: str
    frames: int  # frames of REAL with a face
    target_real_mean: float | None
    target_reach: float | None
    valence_real_mean: float | None
    valence_reach: float | None
    direction_cosine: float | None  # over all expression points
    magnitude_ratio: float | None
    region_cosines: dict[str, float | None]

    def to_dict(self) -> dict[str, object]:
        def num(v: float | None) -> float | None:
            return None if v is None else round(v, 6)

        return {"reference": self.reference, "frames": self.frames,
                "target": {"real_mean": num(self.target_real_mean), "reach": num(self.target_reach)},
                "valence": {"real_mean": num(self.valence_real_mean), "reach": num(self.valence_reach)},
                "landmarks": {"direction_cosine": num(self.direction_cosine),
                              "magnitude_ratio": num(self.magnitude_ratio),
                              "region_cosines": {k: num(v) for k, v in self.region_cosines.items()}}}

    def summary(self) -> str:
        def f(v: float | None, spec: str = ".3f") -> str:
            return "n/a" if v is None else format(v, spec)

        regions = ", ".join(f"{k} {f(v, '+.2f')}" for k, v in self.region_cosines.items())
        return (f"reference {self.reference} ({self.frames} frames with a face): target {f(self.target_real_mean)}"
                f" in the real take, reach {f(self.target_reach)}; valence {f(self.valence_real_mean, '+.3f')}, "
                f"reach {f(self.valence_reach)}\nlandmark change vs the real one: direction cos "
                f"{f(self.direction_cosine, '+.3f')} ({regions}), magnitude ratio {f(self.magnitude_ratio)}")


def _reach(moved: float | None, span: float | None) -> float | None:
    if moved is None or span is None or abs(span) < MIN_REACH_SPAN:
        return None
    return moved / span


def _cosine(a: np.ndarray, b: np.ndarray) -> float | None:
    na, nb = float(np.linalg.norm(a)), float(np.linalg.norm(b))
    return None if na == 0 or nb == 0 else float(a.ravel() @ b.ravel()) / (na * nb)


def score_video(path: Path, classifier: ExpressionClassifier, tracker_config: TrackerConfig | None = None
                ) -> tuple[np.ndarray, np.ndarray, int]:
    """Mean class probabilities (7,), mean face-unit shape (478, 2) and the number of frames with a face, of a
    video scored on its own tracked face."""
    crops, shapes = [], []
    with VideoReader(path, "reference") as reader, FaceTracker(tracker_config) as tracker:
        while (item := reader.read()) is not None:
            face = tracker.track(item[0], round(item[1] * 1e3))
            if face is not None:
                crops.append(classifier.crop(item[0], face.landmarks))
                shapes.append(to_face_units(face.landmarks))
    if not crops:
        raise UsageError(f"no face found in the reference {path}")
    return classifier.probabilities(crops).mean(axis=0), np.mean(shapes, axis=0), len(crops)


def compare_with_reference(report: EvaluationReport, reference: Path, classifier: ExpressionClassifier,
                           tracker_config: TrackerConfig | None = None) -> ReferenceScores:
    """Reach and landmark change of an evaluated edit against the real take `reference`; see the module
    docstring. `classifier` must be the one `report` was scored with."""
    if report.mean_probs_source is None or report.mean_shape_source is None:
        raise UsageError(f"no face found in {report.source}: nothing to compare with the reference")
    probs_real, shape_real, frames = score_video(reference, classifier, tracker_config)
    p_in, p_out = np.asarray(report.mean_probs_source), np.asarray(report.mean_probs_output)
    target_real = target_reach = None
    if report.target_class is not None:
        k = CLASSES.index(report.target_class)
        target_real = float(probs_real[k])
        target_reach = _reach(float(p_out[k] - p_in[k]), target_real - float(p_in[k]))
    v_in, v_out, v_real = (float(p @ VALENCE_VECTOR) for p in (p_in, p_out, probs_real))
    direction = magnitude = None
    regions: dict[str, float | None] = dict.fromkeys(REGIONS)
    if report.mean_shape_output is not None:
        ours = report.mean_shape_output - report.mean_shape_source  # (478, 2)
        real = shape_real - report.mean_shape_source
        direction = _cosine(ours[EXPRESSION_POINTS], real[EXPRESSION_POINTS])
        real_size = float(np.linalg.norm(real[EXPRESSION_POINTS]))
        magnitude = float(np.linalg.norm(ours[EXPRESSION_POINTS])) / real_size if real_size > 0 else None
        regions = {name: _cosine(ours[list(group)], real[list(group)]) for name, group in REGIONS.items()}
    return ReferenceScores(
        reference=str(reference), frames=frames, target_real_mean=target_real, target_reach=target_reach,
        valence_real_mean=v_real, valence_reach=_reach(v_out - v_in, v_real - v_in), direction_cosine=direction,
        magnitude_ratio=None if magnitude is None or math.isnan(magnitude) else magnitude, region_cosines=regions)
