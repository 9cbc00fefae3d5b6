"""Telling the user about their face: lost and found again (rate-limited), and a hint when it is too small."""

from __future__ import annotations

import logging

import numpy as np

from livemood.face.tracker import ACQUIRE_MIN_WIDTH, Face, FaceTracker
from livemood.logs import Episode

log = logging.getLogger(__name__)

FACE_LOST_AFTER_S = 1.0  # s without a tracked face before it is told as lost: a turn of the head is not news
SMALL_FACE_AFTER_S = 2.0  # s lost before looking once for a face too small to track
HINT_QUIET_S = 60.0  # s between two too-small hints


class FaceWatch:
    """Follows the tracker's results frame by frame and logs when the face is lost and found again.

    Times are the frames' own (a file's timeline or, live, the capture clock), so a file's lines say what the
    video shows. Once per loss, after `SMALL_FACE_AFTER_S`, the frame is searched for a face too small to track.
    """

    def __init__(self, tracker: FaceTracker) -> None:
        self._tracker = tracker
        self._lost = Episode(log)
        self._last_seen_s: float | None = None  # time of the last frame with a face (or of the first frame)
        self._searched = False  # this loss has been searched for a small face
        self._hinted_s = -float("inf")

    def update(self, image: np.ndarray, face: Face | None, time_s: float) -> None:
        if face is not None:
            self._last_seen_s = time_s
            self._searched = False
            self._lost.end("face found again", at=time_s)
            return
        if self._last_seen_s is None:  # no face from the start counts from the first frame
            self._last_seen_s = time_s
        missing_s = time_s - self._last_seen_s
        if missing_s >= FACE_LOST_AFTER_S:
            self._lost.start("no face in view: frames go out unchanged until one is back", at=time_s)
        if missing_s >= SMALL_FACE_AFTER_S and not self._searched:
            self._searched = True
            width = self._tracker.small_face_px(image)
            if width is not None and time_s - self._hinted_s >= HINT_QUIET_S:
                self._hinted_s = time_s
                log.warning("a face %.0f px wide is in view but too small to track: come closer to the camera "
                            "(faces need about 1/%.0f of the frame's width, %.0f px here)",
                            width, 1 / ACQUIRE_MIN_WIDTH, ACQUIRE_MIN_WIDTH * image.shape[1])
