"""Expressiveness: the speaker's own expressions scaled up or calmed down, around their own neutral face.

The neutral face is estimated live from the tracked landmarks with their depth, each frame moved onto the neutral
face's skull (a 3D similarity on skull-fixed points takes out the head's position, size, roll, yaw and pitch, so a
nod or a turn is not mistaken for an expression): every SAMPLE_S a shape goes into a window of the last WINDOW_S;
the neutral is the per-coordinate median of the window, which ignores speech (the mouth is mostly near rest) and
expressions held for less than half the window. It is used from the first frame (at first it is the face itself, so
the effect grows in as the window fills), counts as settled once SETTLE_S of samples are in, and then follows the
window's median slowly (time constant ADAPT_S), so a long-held expression bends it only gradually. A file run
settles it before the first frame (`look_ahead`). A new person (the face gone longer than the tracker remembers
one) starts it again; `retake` makes the current face the neutral now (the `n` key: "this is my neutral face").

The move at expressiveness X is (X - 1) x (current - neutral), turned back into the frame's pose, on the landmarks
where expressions show (brows, lids, cheeks, nose; the lips and the skin around them with the lip corners: see
`Layout`), none elsewhere: the jaw and the lips' opening stay the speaker's. It is divided by how much of a move
the face mesh reads back (`TRANSFER`), so the motion measured on the output is X times the input's, and smoothed
over SMOOTH_S, about the tracker's own lag, so amplified motion is no jumpier than the tracking. Blinks are not
expressions and a warp can neither undo nor deepen one: while an eye closes (its lids' gap below BLINK_OPEN of the
neutral's, fully below BLINK_SHUT) its lids are calmed at most as at expressiveness 1 + BLINK_CALM, where the
stretched lid still reads as a closed eye (towards 0 it became a dark slit).
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from livemood.face.align import Similarity, face_frame, onto_skull, to_face_units
from livemood.face.regions import BROWS, CHEEKS, LIDS
from livemood.face.tracker import FaceTracker

log = logging.getLogger(__name__)

SAMPLE_S = 0.2  # one shape into the window this often
WINDOW_S = 6.0  # the median runs over this much of the recent past
SETTLE_S = 3.0  # samples needed before the neutral counts as settled
ADAPT_S = 30.0  # after settling, the neutral follows the window's median with this time constant
FORGET_S = 2.0  # a face gone this long is a new person (the tracker's own re-acquisition window)
SMOOTH_S = 0.02  # time constant of the move's smoothing
UPPER_FACE_Y = 0.9  # face units below the eye line: landmarks above it (brows, lids, nose, upper cheeks) are moved
# The face mesh's lip contours (outer and inner), and each side's corner points (outer, inner).
LIPS = (0, 13, 14, 17, 37, 39, 40, 61, 78, 80, 81, 82, 84, 87, 88, 91, 95, 146, 178, 181, 185, 191, 267, 269, 270,
        291, 308, 310, 311, 312, 314, 317, 318, 321, 324, 375, 402, 405, 409, 415)
CORNERS = ((61, 78), (291, 308))  # the subject's right, then left
SKIN_RADIUS = 0.3  # face units: the skin around the mouth moves with the nearest corner, fading over this
# Of a move asked of the field, the fraction the face mesh reads back on the output, per region: the field meets
# the landmarks' moves at 0.9 (brows, mouth) to 0.65-0.8 (lids, held back by the irises, which keep the gaze), and
# the mesh reads less than the pixels moved. Moves are divided by it, so that the motion measured on the output
# scales by X. Brows and mouth fitted at the working point by `tools/fit_expressiveness.py` on talk_c and talk_e
# (checked on the other clips). The lids' motion is mostly blinks, which a warp can neither undo nor deepen: the fit
# reads back 0.12-0.25 of it, and dividing by that stretches the lids' skin over a closed eye; they keep the 0.37
# measured with the head's pose in (`livemood evaluate`'s 2D measure, where nods carry much of their motion).
TRANSFER = {"brows": 0.52, "lids": 0.37, "mouth": 0.81}
EYE_GAPS = ((159, 145), (386, 374))  # upper and lower lid's middle, the subject's right eye, then left
BLINK_SHUT, BLINK_OPEN = 0.25, 0.5  # the lids' gap as a fraction of the neutral's: below, a blink
BLINK_CALM = -0.5  # a blinking eye's lids are calmed at most this much (expressiveness - 1)
EYE_RADIUS = 0.3  # face units around an eye's middle: its lids and the skin that folds with them (not the brow)


@dataclass(frozen=True)
class Layout:
    """Which landmarks the expressiveness moves, from a neutral (478, 2) face-unit shape, and by how much.

    `points` (brows, lids, nose, forehead, cheeks) move by their own deviation from the neutral. The mouth moves
    with its corners: each lip point with its side's corner, weighted by how far out towards it the point lies (1 at
    the corner, 0 at the midline), so the lips bend and stretch with the corners; the skin around the mouth with the
    nearest corner, fading over SKIN_RADIUS (the chin and jaw below stay the speaker's). `gain` is 1 / TRANSFER of
    each point's region (points outside brows, lids and mouth take their nearest region's)."""

    points: np.ndarray  # (K,) landmark indices moved by their own deviation
    carried: np.ndarray  # (L,) landmark indices moved with a corner
    side: np.ndarray  # (L,) 0 or 1, index into CORNERS
    weight: np.ndarray  # (L,)
    gain: np.ndarray  # (478,)
    eyes: tuple[np.ndarray, np.ndarray]  # each eye's lids and the skin folding with them, in EYE_GAPS' order

    @classmethod
    def of(cls, neutral: np.ndarray, transfer: dict[str, float] | None = None) -> Layout:
        transfer = TRANSFER if transfer is None else transfer
        corners = np.stack([neutral[list(c)].mean(axis=0) for c in CORNERS])  # (2, 2)
        right, left = corners
        lips = np.array(LIPS)
        across = (neutral[lips] - 0.5 * (right + left)) @ (left - right) / (0.25 * float(np.sum((left - right) ** 2)))
        upper = np.setdiff1d(np.union1d(np.flatnonzero(neutral[:468, 1] < UPPER_FACE_Y), CHEEKS), lips)
        skin = np.setdiff1d(np.setdiff1d(np.arange(468), upper), lips)  # (the outline stays: the field pins it)
        near = np.linalg.norm(neutral[skin, None] - corners[None], axis=2)  # (S, 2)
        carried = np.concatenate([lips, skin])
        side = np.concatenate([(across > 0).astype(int), near.argmin(axis=1)])
        weight = np.concatenate([np.clip(np.abs(across), 0.0, 1.0), np.exp(-(near.min(axis=1) / SKIN_RADIUS) ** 2)])
        regions = {"brows": np.array(BROWS), "lids": np.array(LIDS), "mouth": carried}
        known = np.concatenate(list(regions.values()))
        known_gain = np.concatenate([np.full(len(v), 1.0 / transfer[k]) for k, v in regions.items()])
        to = neutral[known]  # (K, 2); squared distances (less |point|^2) by a product, 3x cheaper than differences
        nearest = (np.sum(to**2, axis=1)[None] - 2.0 * neutral @ to.T).argmin(axis=1)
        gain = known_gain[nearest]
        right, left = (upper[np.linalg.norm(neutral[upper] - 0.5 * (neutral[a] + neutral[b]), axis=1) < EYE_RADIUS]
                       for a, b in EYE_GAPS)
        return cls(upper, carried, side, weight, gain, (right, left))

    def move(self, deviation: np.ndarray, scale: float = 1.0, eyes_open: tuple[float, float] = (1.0, 1.0)
             ) -> np.ndarray:
        """(478, 2) move: `scale` (expressiveness - 1) times a (478, 2) deviation from the neutral, carried onto the
        moved landmarks with their gains; each eye's lids and the skin around them by its `eyes_open` weight (0: a
        blink, whose lids are calmed at most by BLINK_CALM)."""
        move = np.zeros_like(deviation)
        move[self.points] = scale * deviation[self.points]
        for lids, weight in zip(self.eyes, eyes_open, strict=True):
            move[lids] = (weight * scale + (1.0 - weight) * max(scale, BLINK_CALM)) * deviation[lids]
        corner = np.stack([deviation[list(c)].mean(axis=0) for c in CORNERS])
        move[self.carried] = scale * self.weight[:, None] * corner[self.side]
        return self.gain[:, None] * move


def eyes_open(points: np.ndarray, neutral: np.ndarray) -> tuple[float, float]:
    """Per eye, 1 while its lids' gap in `points` is at least BLINK_OPEN of the `neutral`'s (both (478, 3), on the
    same skull), fading to 0 at BLINK_SHUT: how much of the lids' deviation is an expression rather than a blink."""
    gap = [float(np.linalg.norm(points[a] - points[b]) / max(np.linalg.norm(neutral[a] - neutral[b]), 1e-6))
           for a, b in EYE_GAPS]
    right, left = (min(max((g - BLINK_SHUT) / (BLINK_OPEN - BLINK_SHUT), 0.0), 1.0) for g in gap)
    return right, left


class NeutralFace:
    """The live estimate of one speaker's neutral face; see the module docstring."""

    def __init__(self, transfer: dict[str, float] | None = None) -> None:
        self.transfer = transfer  # TRANSFER unless given
        self._window: deque[np.ndarray] = deque(maxlen=round(WINDOW_S / SAMPLE_S))
        self._last_seen_ms: int | None = None
        self.reset()

    def reset(self) -> None:
        """Forget the estimate (a new person)."""
        self._window.clear()
        self.neutral: np.ndarray | None = None  # (478, 3) on the skull of the first face seen
        self.settled = False
        self._next_sample_ms: int | None = None
        self._layout: Layout | None = None  # the landmarks moved, from the neutral's layout
        self._move = np.zeros((478, 2))
        self._move_ms: int | None = None

    def retake(self, points: np.ndarray) -> None:
        """This face, (478, 3) landmarks with depth, is the neutral face from now on (and the window starts from it)."""
        self._start_from([self._onto_neutral(points)[0]] * self._window.maxlen)  # type: ignore[operator]
        log.info("neutral face taken now")

    def look_ahead(self, frames: Iterable[tuple[np.ndarray, float]]) -> None:
        """Settle the neutral face before the run from a file's first WINDOW_S of (BGR frame, seconds), tracked here:
        expressiveness then applies from the first frame, where live it grows in as the window fills."""
        shapes: list[np.ndarray] = []
        first_ms = next_ms = None
        with FaceTracker() as tracker:
            for frame, t_s in frames:
                t_ms = round(t_s * 1e3)
                first_ms = t_ms if first_ms is None else first_ms
                if t_ms - first_ms >= WINDOW_S * 1e3:
                    break
                face = tracker.track(frame, t_ms)
                if face is not None and (next_ms is None or t_ms >= next_ms):
                    shapes.append(face.points if not shapes else onto_skull(face.points, shapes[0])[0])
                    next_ms = t_ms + round(SAMPLE_S * 1e3)
        if shapes:
            self._start_from(shapes)
            log.info("neutral face settled from the first %.1f s", len(shapes) * SAMPLE_S)

    def _start_from(self, shapes: list[np.ndarray]) -> None:
        self._window.clear()
        self._window.extend(shapes)
        self.neutral = np.median(np.stack(self._window), axis=0)
        self._layout = Layout.of(to_face_units(self.neutral[:, :2]), self.transfer)
        self.settled = True

    def _onto_neutral(self, points: np.ndarray) -> tuple[np.ndarray, Similarity]:
        """(478, 3) landmarks with depth moved onto the neutral face's skull (onto their own before there is one)."""
        return onto_skull(points, points if self.neutral is None else self.neutral)

    def observe(self, points: np.ndarray, t_ms: int) -> None:
        """Take a frame's (478, 3) landmarks with depth (pixels); one every SAMPLE_S goes into the window."""
        if self._last_seen_ms is not None and t_ms - self._last_seen_ms > FORGET_S * 1e3:
            log.info("a new face: estimating its neutral face again")
            self.reset()
        self._last_seen_ms = t_ms
        if self._next_sample_ms is None or t_ms >= self._next_sample_ms:
            self._next_sample_ms = t_ms + round(SAMPLE_S * 1e3)
            self._window.append(self._onto_neutral(points)[0])
            median = np.median(np.stack(self._window), axis=0)
            if not self.settled:
                self.neutral = median
                self._layout = Layout.of(to_face_units(median[:, :2]), self.transfer)  # then kept: it only drifts
                if len(self._window) * SAMPLE_S >= SETTLE_S:
                    self.settled = True
                    log.info("neutral face settled after %.1f s", len(self._window) * SAMPLE_S)
            else:
                assert self.neutral is not None
                self.neutral += (1.0 - math.exp(-SAMPLE_S / ADAPT_S)) * (median - self.neutral)

    def move(self, points: np.ndarray, scale: float, t_ms: int) -> np.ndarray:
        """(478, 2) move, in face units of the frame's own face frame, that makes the expression of (478, 3)
        landmarks with depth `scale` + 1 times as large around the neutral (scale = expressiveness - 1), smoothed in
        time. The deviation from the neutral is taken on the skull-aligned face and turned back into the frame's
        pose: the head's own turns and nods are not expressions and are not scaled."""
        target = np.zeros((478, 2))
        if self.neutral is not None and self._layout is not None:
            aligned, pose = self._onto_neutral(points)
            deviation = face_frame(points[:, :2]).units(pose.back(aligned - self.neutral)[:, :2])  # (478, 2)
            target = self._layout.move(deviation, scale, eyes_open(aligned, self.neutral))
        alpha = 1.0 if self._move_ms is None else 1.0 - math.exp(-max(0.0, t_ms - self._move_ms) / (SMOOTH_S * 1e3))
        self._move_ms = t_ms
        self._move += alpha * (target - self._move)
        return self._move

