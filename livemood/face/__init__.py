"""The face: mediapipe tracking, smoothing, aligned crops and paste-back."""

from livemood.face.tracker import Face, FaceTracker

__all__ = ["Face", "FaceTracker"]
