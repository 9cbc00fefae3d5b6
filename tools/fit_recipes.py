"""Fit the warp engine's emotion recipes from paired neutral / emotion takes in MEAD's layout.

    .venv/bin/python tools/fit_recipes.py [--data ../shared/media/mead] [--out livemood/engines/recipes.json]

For every person and sentence with a neutral take and emotion takes (`tools/mead_reach.py` pairs them the same
way), each frame's 3D face-mesh landmarks (x, y and mediapipe's depth) are aligned to the neutral take's mean
shape by a similarity transform on points that move with the skull only (eye corners, nose, temples), which
removes the head's position, size and rotation, yaw and pitch included: the takes are recorded with the head a
few degrees differently turned, which a 2D alignment would mistake for an expression. The emotion's recipe is the
mean aligned shape of its take minus the neutral take's, in face units (about the eye-to-eye distance) in the
upright face frame, averaged over pairs, left and right halves mirrored onto each other (contempt is one-sided
and kept as measured), plus the emotion's EMFACS prototype as a speaker-independent prior (see PROTOTYPES). The
face outline and the irises get no move (the engine pins them), and the jaw's opening
is measured as the ratio of mean inner-lip openings (emotion / neutral), used only where the recipe says so, and
is at least the prototype's jaw drop (JAW_PRIOR).

A user with the full MEAD (60 speakers) can refit; the shipped file was fitted on the speakers listed in it.
"""

from __future__ import annotations

import argparse
import json
import logging
from collections import defaultdict
from datetime import date
from pathlib import Path

import numpy as np
from mediapipe.python.solutions.face_mesh_connections import FACEMESH_FACE_OVAL
from tqdm import tqdm

from livemood.face.align import onto_skull, skull_units
from livemood.face.regions import LIDS
from livemood.face.tracker import FaceTracker
from livemood.training.data import paired_takes, scan
from livemood.video import VideoReader

OUTLINE = sorted({i for edge in FACEMESH_FACE_OVAL for i in edge})
UPPER_INNER_LIP, LOWER_INNER_LIP = 13, 14
MAX_JAW = 1.6  # the opening may be scaled up to this much at intensity 1
# The emotions whose jaw may open with the speaker's own opening, and the jaw's part of their prior (EMFACS' AU26,
# the jaw drop): the opening's factor is the actors' but at least this.
JAW_PRIOR = {"surprised": 1.5, "fearful": 1.3}
ASYMMETRIC = ("contempt",)
# The actors' moves are added to a speaker-independent prior: the EMFACS prototype of each emotion (Ekman and
# Friesen's action units), so that one actor's way of showing an emotion (M030's sad face, say, does not lower the
# lip corners) is not all of the recipe, and the cues expression classifiers read on every face are there.
PRIOR_WEIGHT = 1.0
PRIOR_YIELD = 0.3  # how much less the prior adds where the actors already move its way

# Landmark groups (subject's right, subject's left) for the action units' handles.
INNER_BROW = ((107, 55, 65), (336, 285, 295))
MID_BROW = ((105, 52), (334, 282))
OUTER_BROW = ((70, 46, 63), (300, 276, 293))
UPPER_LID = ((159, 158, 160), (386, 385, 387))
LOWER_LID = ((145, 153, 144), (374, 380, 373))
CHEEK = ((205, 50), (425, 280))
NOSE_WING = ((98, 129), (327, 358))
UPPER_LIP = ((37, 39, 40), (267, 269, 270))
LIP_CORNER = ((61, 146, 185), (291, 375, 409))
MODIOLUS = ((57, 212), (287, 432))  # just outside the lip corners, where the corner muscles meet
UNDER_EYE = ((118, 119), (347, 348))
# A brow raise lifts the skin above the eye, not the eyelid's edge (which only the lid handles open), whereas a
# lowered brow does press the lid down. Letting raised brows' Gaussians drag the lid margins (the eye contours)
# along opened the eyes into round, stretched eyes in surprise and fear.
LID_HANDLES = (UPPER_LID, LOWER_LID)
# An action unit: handles (right group, left group, dx outwards, dy down, Gaussian radius), face units; a handle
# with `one_side` moves the left side only.
ACTION_UNITS: dict[str, tuple[tuple[tuple[tuple[int, ...], tuple[int, ...]], float, float, float, bool], ...]] = {
    "AU1": ((INNER_BROW, 0.0, -0.2, 0.26, False), (OUTER_BROW, 0.0, 0.04, 0.2, False)),
    "AU2": ((OUTER_BROW, 0.0, -0.24, 0.28, False), (MID_BROW, 0.0, -0.14, 0.24, False)),
    "AU4": ((INNER_BROW, -0.1, 0.14, 0.24, False), (MID_BROW, -0.08, 0.09, 0.22, False)),
    "AU5": ((UPPER_LID, 0.0, -0.085, 0.1, False), (LOWER_LID, 0.0, 0.025, 0.08, False)),
    "AU6": ((CHEEK, 0.03, -0.13, 0.3, False), (UNDER_EYE, 0.0, -0.06, 0.14, False),
            (LOWER_LID, 0.0, -0.06, 0.1, False), (OUTER_BROW, 0.0, 0.04, 0.2, False)),
    "AU7": ((LOWER_LID, 0.0, -0.05, 0.09, False), (UPPER_LID, 0.0, 0.02, 0.08, False)),
    "AU9": ((NOSE_WING, 0.0, -0.09, 0.16, False),),
    "AU10": ((UPPER_LIP, 0.0, -0.06, 0.16, False), (NOSE_WING, 0.02, -0.04, 0.14, False)),
    "AU12": ((MODIOLUS, 0.22, -0.2, 0.26, False),),
    "AU14": ((LIP_CORNER, 0.04, -0.04, 0.16, False),),
    "AU15": ((MODIOLUS, 0.0, 0.12, 0.22, False),),
    "AU20": ((LIP_CORNER, 0.15, 0.03, 0.24, False),),
    "AU23": ((MODIOLUS, -0.07, 0.0, 0.2, False),),
    "AU12L": ((LIP_CORNER, 0.12, -0.16, 0.24, True),),
    "AU14L": ((LIP_CORNER, 0.05, -0.04, 0.15, True),),
}
PROTOTYPES: dict[str, dict[str, float]] = {  # EMFACS, without the jaw drop (the opening stays the speaker's)
    "happy": {"AU6": 1.0, "AU12": 1.0},
    "sad": {"AU1": 1.0, "AU4": 0.5, "AU15": 1.0},
    "angry": {"AU4": 1.5, "AU5": 0.4, "AU7": 1.0, "AU23": 1.2},
    # AU23 rounds the mouth (not in EMFACS). The brows and lids at 0.6 and 0.3 of the full units: at 1, on top of
    # the actor's raise, they lifted the brows into the hairline and opened round, staring eyes (M030, talk_e).
    "surprised": {"AU1": 0.6, "AU2": 0.6, "AU5": 0.3, "AU23": 0.8},
    "fearful": {"AU1": 1.0, "AU2": 0.7, "AU4": 0.6, "AU5": 0.5, "AU20": 1.0},
    "disgusted": {"AU9": 1.0, "AU10": 1.0, "AU4": 0.5, "AU15": 0.6},
    "contempt": {"AU12L": 1.0, "AU14L": 1.0},
}


def track(path: Path) -> np.ndarray:
    """(F, 478, 3) landmarks with depth, in pixels, for the frames with a face."""
    frames = []
    with VideoReader(path) as reader, FaceTracker() as tracker:
        while (item := reader.read()) is not None:
            face = tracker.track(item[0], round(item[1] * 1e3))
            if face is not None:
                frames.append(face.points)
    if not frames:
        raise SystemExit(f"no face in {path}")
    return np.array(frames, dtype=np.float64)


def align(frames: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """Each frame (F, 478, 3) moved onto `reference` (478, 3) by its skull points."""
    return np.array([onto_skull(pts, reference)[0] for pts in frames])


def frontal(shape: np.ndarray) -> np.ndarray:
    """`shape` (478, 3) rotated so that the plane of the face outline, which stays nearly fixed to the skull, faces
    the camera (normal along z)."""
    pts = shape[OUTLINE]
    centred = pts - pts.mean(axis=0)
    normal = np.linalg.eigh(centred.T @ centred)[1][:, 0]
    normal *= -1 if normal[2] > 0 else 1
    target = np.array([0.0, 0.0, -1.0])
    axis = np.cross(normal, target)
    sin, cos = np.linalg.norm(axis), float(normal @ target)
    if sin < 1e-9:
        return shape
    k = axis / sin
    kx = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    rot = np.eye(3) + sin * kx + (1 - cos) * kx @ kx
    centre = shape.mean(axis=0)
    return (shape - centre) @ rot.T + centre


def prototype(emotion: str, shape: np.ndarray) -> np.ndarray:
    """(478, 2) face-unit moves of an emotion's EMFACS prototype on a face of this (478, 2) face-unit shape: each
    handle's move, spread over its neighbourhood by a Gaussian, summed."""
    move = np.zeros_like(shape)
    for au, weight in PROTOTYPES.get(emotion, {}).items():
        for (right, left), dx, dy, sigma, one_side in ACTION_UNITS[au]:
            sides = ((left, 1.0),) if one_side else ((right, -1.0), (left, 1.0))
            for group, outward in sides:
                centre = shape[list(group)].mean(axis=0)
                g = np.exp(-np.sum((shape - centre) ** 2, axis=1) / (2 * sigma**2))
                if dy < 0 and (right, left) not in LID_HANDLES:
                    g[list(LIDS)] = 0.0
                move += weight * g[:, None] * np.array([dx * outward, dy])
    return move


def speech_basis(shapes: np.ndarray, opening: np.ndarray) -> np.ndarray:
    """(478, 2): how each landmark moves per face unit of inner-lip opening while the person speaks (least squares
    over a take's frames (F, 478, 2) against their openings (F,))."""
    o = opening - opening.mean()
    return np.tensordot(o, shapes - shapes.mean(axis=0), axes=(0, 0)) / max(float(o @ o), 1e-9)


def mirror_map(shape: np.ndarray) -> np.ndarray:
    """(478,) index of each landmark's mirror image across the face's midline: the pairing (a permutation that is
    its own inverse) that best matches the shape with its flipped self."""
    from scipy.optimize import linear_sum_assignment

    flipped = shape * np.array([-1.0, 1.0])
    cost = np.linalg.norm(shape[None, :, :] - flipped[:, None, :], axis=2)  # (478, 478): [i, j] = |s_j - flip(s_i)|
    _, mirror = linear_sum_assignment(cost + cost.T)  # symmetric cost: i <-> j counted both ways
    if not np.array_equal(mirror[mirror], np.arange(len(mirror))):
        raise SystemExit("the landmark pairing is not symmetric; the neutral take's face may be turned too far")
    return mirror


def fit(data: Path) -> dict[str, object]:
    pairs = paired_takes(scan(data))
    if not pairs:
        raise SystemExit(f"no neutral/emotion pairs in {data}")
    moves: dict[str, list[np.ndarray]] = defaultdict(list)
    jaws: dict[str, list[float]] = defaultdict(list)
    neutral_shapes = []
    for (person, sentence), by_emotion in tqdm(pairs.items(), desc="pairs", unit="pair"):
        neutral = track(by_emotion["neutral"])
        reference = neutral[0]
        for _ in range(3):  # the reference converges to the take's mean shape in a few rounds
            reference = frontal(align(neutral, reference).mean(axis=0))
        base = skull_units(neutral, reference)  # (F, 478, 2), face units of the neutral take's frontal mean face
        opening = np.linalg.norm(base[:, UPPER_INNER_LIP] - base[:, LOWER_INNER_LIP], axis=1)  # (F,)
        jaw_basis = speech_basis(base, opening)
        neutral_shapes.append(base.mean(axis=0))
        for emotion, path in by_emotion.items():
            if emotion == "neutral":
                continue
            shapes = skull_units(track(path), reference)
            open_e = np.linalg.norm(shapes[:, UPPER_INNER_LIP] - shapes[:, LOWER_INNER_LIP], axis=1)
            # The jaw opens further in many emotional takes; the engine leaves the opening to the speaker, so the
            # part of the change that opening explains is taken out of the expression.
            change = shapes.mean(axis=0) - base.mean(axis=0)
            moves[emotion].append(change - jaw_basis * (open_e.mean() - opening.mean()))
            jaws[emotion].append(float(open_e.mean() / max(opening.mean(), 1e-6)))
        logging.info("fitted %s/%s", person, sentence)
    mean_shape = np.mean(neutral_shapes, axis=0)
    mirror = mirror_map(mean_shape)
    recipes = {}
    for emotion, ds in sorted(moves.items()):
        d = np.mean(ds, axis=0)
        if emotion not in ASYMMETRIC:
            d = 0.5 * (d + d[mirror] * np.array([-1.0, 1.0]))
        prior = prototype(emotion, mean_shape)
        # Where the actors already move the way the prototype does, it adds less (it is there to fill in what they
        # lack, not to double what they show): its weight falls from 1 to 1 - PRIOR_YIELD as their moves align with it.
        agreement = max(0.0, float(np.sum(d * prior)) / max(float(np.linalg.norm(d) * np.linalg.norm(prior)), 1e-9))
        d = d + PRIOR_WEIGHT * (1.0 - PRIOR_YIELD * agreement) * prior
        jaw = 1.0
        if emotion in JAW_PRIOR:
            jaw = float(np.clip(max(np.mean(jaws[emotion]), JAW_PRIOR[emotion]), 1.0, MAX_JAW))
        recipes[emotion] = {"jaw": round(jaw, 3), "move": np.round(d, 4).tolist()}
    people = sorted({person for person, _ in pairs})
    return {"fitted_on": people, "pairs": len(pairs), "date": date.today().isoformat(), "prior_weight": PRIOR_WEIGHT,
            "units": "face units, upright face frame (x across to the image's right, y down); intensity 1",
            "recipes": recipes}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=Path("../shared/media/mead"))
    p.add_argument("--out", type=Path, default=Path("livemood/engines/recipes.json"))
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = fit(args.data)
    args.out.write_text(json.dumps(result, separators=(",", ":")) + "\n")
    for emotion, recipe in result["recipes"].items():
        move = np.array(recipe["move"])
        print(f"{emotion:>10}: mean move {np.linalg.norm(move, axis=1).mean():.3f} face units, "
              f"largest {np.linalg.norm(move, axis=1).max():.3f}, jaw x{recipe['jaw']:.2f}")
    print(f"wrote {args.out} (fitted on {', '.join(result['fitted_on'])})")


if __name__ == "__main__":
    main()
