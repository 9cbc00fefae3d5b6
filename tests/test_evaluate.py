"""`livemood evaluate` on a real talking clip: against itself, against copies changed only on the face or only
in the background, and with bad inputs. Copies are written losslessly (FFV1, BGR) so pixel differences are exact."""

from __future__ import annotations

import json
import math
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from livemood.config import CLASSIFIERS, UsageError
from livemood.evaluation.metrics import background_mask, lip_opening
from livemood.evaluation.report import format_report
from livemood.evaluation.videos import evaluate_videos
from livemood.face.tracker import FaceTracker
from livemood.models.expression import ExpressionClassifier

from .conftest import read_frames

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CLIP = MEDIA / "talk_d.mp4"  # 480x480, 25 fps, 175 frames: the smallest frames, so the quickest
FRAMES = 30  # frames measured per evaluation
NOISE_OUTSIDE = 1.6  # the background copy adds noise only outside the face box enlarged this much
NOISE_LEVELS = 20  # grey levels, standard deviation of that noise


def write_lossless(path: Path, frames: list[np.ndarray], fps: int = 25) -> Path:
    """BGR frames → FFV1 in Matroska, stored as BGR so decoding returns the exact pixels."""
    with av.open(str(path), "w") as c:
        stream = c.add_stream("ffv1", rate=fps)
        stream.height, stream.width = frames[0].shape[:2]
        stream.pix_fmt = "bgr0"
        for image in frames:
            c.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24").reformat(format="bgr0")))
        c.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def classifier() -> ExpressionClassifier:
    return ExpressionClassifier()


@pytest.fixture(scope="module")
def clip_frames() -> list[np.ndarray]:
    if not CLIP.is_file():
        pytest.fail(f"the shared clip is missing: {CLIP}")
    return read_frames(CLIP, FRAMES)


@pytest.fixture(scope="module")
def landmarks(clip_frames: list[np.ndarray]) -> list[np.ndarray]:
    """(478, 2) landmarks per frame, tracked the way `evaluate_videos` tracks the input."""
    with FaceTracker() as tracker:
        faces = [tracker.track(f, round(i * 40)) for i, f in enumerate(clip_frames)]
    assert all(face is not None for face in faces), "the clip shows a face in every frame"
    return [face.landmarks for face in faces]


@pytest.fixture(scope="module")
def copies(tmp_path_factory: pytest.TempPathFactory, clip_frames: list[np.ndarray],
           landmarks: list[np.ndarray]) -> dict[str, Path]:
    """Lossless copies: unchanged, face turned upside down inside its hull, background noise, fewer frames."""
    folder = tmp_path_factory.mktemp("evaluate")
    rng = np.random.default_rng(0)
    face_changed, background_changed = [], []
    for image, pts in zip(clip_frames, landmarks, strict=True):
        x0, y0 = np.floor(pts.min(axis=0)).astype(int)
        x1, y1 = np.ceil(pts.max(axis=0)).astype(int)
        # Face: the box's content flipped upside down, pasted only inside the landmarks' hull.
        flipped = image.copy()
        flipped[y0:y1, x0:x1] = image[y0:y1, x0:x1][::-1]
        hull = np.zeros(image.shape[:2], np.uint8)
        cv2.fillConvexPoly(hull, cv2.convexHull(np.round(pts).astype(np.int32)), 255)
        face_changed.append(np.where(hull[..., None] > 0, flipped, image))
        # Background: noise outside the face box enlarged NOISE_OUTSIDE times.
        centre, half = (pts.min(axis=0) + pts.max(axis=0)) / 2, NOISE_OUTSIDE * (pts.max(axis=0) - pts.min(axis=0)) / 2
        keep = np.zeros(image.shape[:2], bool)
        (bx0, by0), (bx1, by1) = np.round(centre - half).astype(int).clip(0), np.round(centre + half).astype(int)
        keep[by0:by1, bx0:bx1] = True
        noise = rng.normal(0.0, NOISE_LEVELS, image.shape)
        noisy = np.clip(image + noise, 0, 255).astype(np.uint8)
        background_changed.append(np.where(keep[..., None], image, noisy))
    return {
        "input": write_lossless(folder / "input.mkv", clip_frames),
        "face": write_lossless(folder / "face.mkv", face_changed),
        "background": write_lossless(folder / "background.mkv", background_changed),
        "short": write_lossless(folder / "short.mkv", clip_frames[: FRAMES - 8]),
    }


@pytest.fixture(scope="module")
def self_report(tmp_path_factory: pytest.TempPathFactory, classifier: ExpressionClassifier):
    plot = tmp_path_factory.mktemp("plot") / "happy.png"
    report = evaluate_videos(CLIP, CLIP, "happy", plot, progress=False, max_frames=FRAMES, classifier=classifier)
    return report, plot


def test_clip_against_itself_changes_nothing(self_report) -> None:
    report, _ = self_report
    assert report.source_frames == report.output_frames == 175, "every frame is counted, past max_frames too"
    assert report.frame_counts_match and report.frames_compared == FRAMES and report.face_frames == FRAMES
    assert report.target_class == "happy"
    assert abs(report.target_shift) < 1e-6 and abs(report.valence_shift) < 1e-6
    assert report.target_rise_fraction == 0.0
    np.testing.assert_allclose(report.mean_probs_source, report.mean_probs_output, atol=1e-6)
    assert abs(sum(report.mean_probs_source) - 1.0) < 1e-4
    assert report.lip_frames == FRAMES and report.lip_correlation > 0.999 and report.lip_sync_kept
    assert math.isinf(report.background_psnr_db) and math.isinf(report.background_psnr_min_db)
    assert report.largest_gain is None
    data = json.loads(report.to_json(per_frame=True))  # strict JSON: no Infinity or NaN literals
    assert data["background_psnr_db"]["overall"] == "inf"
    assert data["frames"] == {"source": 175, "output": 175, "match": True, "compared": FRAMES, "with_face": FRAMES}
    assert len(data["per_frame"]["target_source"]) == FRAMES
    text = format_report(report)
    assert "175 frames; all kept" in text and "shift +0.000" in text and "inf dB" in text


def test_plot_is_a_png(self_report) -> None:
    _, plot = self_report
    assert plot.stat().st_size > 10_000
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_face_change_moves_probabilities_background_change_moves_psnr(copies: dict[str, Path], name: str) -> None:
    face = evaluate_videos(copies["input"], copies["face"], "sad", None, progress=False, classifier=name)
    back = evaluate_videos(copies["input"], copies["background"], "sad", None, progress=False, classifier=name)
    for report in (face, back):
        assert report.classifier == name and json.loads(report.to_json())["classifier"] == name
        assert report.source_frames == report.output_frames == report.frames_compared == FRAMES
    # Only the face changed: the background is bit-identical, the classifier sees a different face.
    assert math.isinf(face.background_psnr_db)
    face_change = np.abs(np.subtract(face.mean_probs_output, face.mean_probs_source)).max()
    assert face_change > 0.05
    assert face.lip_correlation is None or not face.lip_sync_kept, "an upside-down face has other lips"
    # Only the background changed: PSNR of the added noise (~22 dB for 20 levels), the face scores as before.
    assert 15.0 < back.background_psnr_db < 30.0
    back_change = np.abs(np.subtract(back.mean_probs_output, back.mean_probs_source)).max()
    assert back_change < 1e-6 < face_change
    assert back.lip_correlation > 0.95, "the face is untouched, so its lips move the same"


def test_different_frame_counts_compare_the_common_frames(
        copies: dict[str, Path], classifier: ExpressionClassifier, caplog: pytest.LogCaptureFixture) -> None:
    report = evaluate_videos(copies["input"], copies["short"], None, None, progress=False, classifier=classifier)
    assert (report.source_frames, report.output_frames, report.frames_compared) == (FRAMES, FRAMES - 8, FRAMES - 8)
    assert not report.frame_counts_match and "frame counts differ" in caplog.text
    assert report.target_class is None and report.target_shift is None
    assert abs(report.valence_shift) < 1e-6 and math.isinf(report.background_psnr_db)
    assert "COUNTS DIFFER" in format_report(report)
    json.loads(report.to_json())


def test_background_mask_grows_the_hull(landmarks: list[np.ndarray], clip_frames: list[np.ndarray]) -> None:
    pts = landmarks[0]
    mask = background_mask(pts, clip_frames[0].shape)
    size = float((pts.max(axis=0) - pts.min(axis=0)).max())
    lo, hi = pts.min(axis=0), pts.max(axis=0)
    # Face pixels are masked out, up to ~15 % of the face size beyond its extreme points, and no further than 20 %.
    assert mask[int(lo[1]) + 5:int(hi[1]) - 5, int((lo[0] + hi[0]) / 2)].max() == 0
    leftmost = pts[np.argmin(pts[:, 0])]
    y = int(np.rint(leftmost[1]))
    assert mask[y, int(leftmost[0] - 0.13 * size)] == 0 and mask[y, int(leftmost[0] - 0.2 * size)] == 255
    assert 0.0 < lip_opening(pts) < 0.2


@pytest.mark.parametrize("case", ["missing source", "missing output", "not a video", "folder", "emotion",
                                  "plot folder", "max_frames", "sizes differ", "classifier"])
def test_bad_inputs_raise_usage_error(case: str, tmp_path: Path, clip_frames: list[np.ndarray],
                                      classifier: ExpressionClassifier) -> None:
    source, output, emotion, plot, max_frames = CLIP, CLIP, "happy", None, None
    chosen: ExpressionClassifier | str = classifier
    if case == "missing source":
        source = tmp_path / "nope.mp4"
    elif case == "missing output":
        output = tmp_path / "nope.mp4"
    elif case == "not a video":
        output = tmp_path / "notes.txt"
        output.write_text("not a video\n")
    elif case == "folder":
        output = tmp_path
    elif case == "emotion":
        emotion = "joyful"
    elif case == "plot folder":
        plot = tmp_path / "missing" / "plot.png"
    elif case == "max_frames":
        max_frames = 0
    elif case == "classifier":
        chosen = "resnet"
    else:
        output = write_lossless(tmp_path / "small.mkv", [cv2.resize(f, (240, 240)) for f in clip_frames[:2]])
    with pytest.raises(UsageError):
        evaluate_videos(source, output, emotion, plot, progress=False, max_frames=max_frames, classifier=chosen)


def test_reference_scores_the_real_take_as_reaching_itself(classifier: ExpressionClassifier) -> None:
    """With the real take as the output, the landmark change is the real one exactly (cosine 1, magnitude 1); the
    reach is the output's rise over the real take's (the output is scored where the input's face is, the real
    take where its own face is, so a real take of another head position is not 1); an unedited copy reaches about
    nothing."""
    from livemood.evaluation.reference import compare_with_reference

    mead = MEDIA / "mead"
    neutral, happy = mead / "M030_front_neutral_level1_001.mp4", mead / "M030_front_happy_level3_001.mp4"
    report = evaluate_videos(neutral, happy, "happy", None, progress=False, classifier=classifier)
    real = compare_with_reference(report, happy, classifier)
    assert real.direction_cosine == pytest.approx(1.0) and real.magnitude_ratio == pytest.approx(1.0)
    assert all(c == pytest.approx(1.0) for c in real.region_cosines.values())
    assert real.target_real_mean is not None and real.target_real_mean > 0.9, "the actor's smile reads as happy"
    assert real.target_reach == pytest.approx((report.target_output_mean - report.target_source_mean)
                                              / (real.target_real_mean - report.target_source_mean))
    same = compare_with_reference(evaluate_videos(neutral, neutral, "happy", None, progress=False,
                                                  classifier=classifier), happy, classifier)
    assert same.target_reach is not None and abs(same.target_reach) < 0.05
    assert same.magnitude_ratio is not None and same.magnitude_ratio < 0.05
    assert "reach" in real.summary() and real.to_dict()["landmarks"]["direction_cosine"] == pytest.approx(1.0)
