"""The pre-trained expression classifier, loaded from the installed package's weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from livemood.demo import portrait
from livemood.expression import CLASSES, ExpressionClassifier, ExpressionNet, face_crop, find_weights

# The astronaut portrait's face box (pixels), measured once with mediapipe face mesh.
ASTRONAUT_FACE = np.array([[179.0, 71.2], [270.7, 177.4]])


@pytest.fixture(scope="module")
def classifier() -> ExpressionClassifier:
    return ExpressionClassifier()


def test_weights_match_the_network_exactly() -> None:
    state = torch.load(find_weights(), map_location="cpu", weights_only=True)["network"]
    net = ExpressionNet()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_smiling_portrait_is_happy(classifier: ExpressionClassifier) -> None:
    probs = classifier.probabilities(face_crop(portrait(), ASTRONAUT_FACE)[None])[0]
    assert probs.shape == (len(CLASSES),) and abs(probs.sum() - 1) < 1e-5
    assert CLASSES[int(probs.argmax())] == "happy" and probs[CLASSES.index("happy")] > 0.5


def test_upside_down_face_is_not_confidently_happy(classifier: ExpressionClassifier) -> None:
    crop = face_crop(portrait(), ASTRONAUT_FACE)
    upright, flipped = classifier.probabilities(np.stack([crop, crop[::-1]]))
    assert flipped[CLASSES.index("happy")] < upright[CLASSES.index("happy")] - 0.2, "the net reads the face"


def test_missing_weights_say_how_to_get_them(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="make install"):
        find_weights(tmp_path / "nope.pkl")
