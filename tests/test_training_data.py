"""Training data pipeline on the real shared clips: scan, preprocess (cache), and the training datasets."""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import av
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from livemood.audio.mel import mel_window
from livemood.config import EMOTIONS
from livemood.training.data import ClipInfo, TalkingFaceDataset, TrainingClip, preprocess, scan

T = 5  # frames per window


def _link(media: Path, name: str, dest: Path) -> Path:
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.symlink_to(media / name)
    return dest


@pytest.fixture(scope="module")
def cached(media: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """talk_a as P1's neutral sentence 001 and talk_c (another length) as P1's happy 001, preprocessed once."""
    root = tmp_path_factory.mktemp("data")
    _link(media, "talk_a.mp4", root / "P1" / "neutral" / "level_1" / "001.mp4")
    _link(media, "talk_c.mp4", root / "P1" / "happy" / "level_2" / "001.mp4")
    clips = scan(root)
    files = preprocess(clips, root.parent / f"{root.name}_cache", progress=False)
    assert len(files) == 2
    return {info.emotion: path for info, path in zip(clips, files, strict=True)}


@pytest.fixture(scope="module")
def neutral(cached: dict[str, Path]) -> TrainingClip:
    return TrainingClip.load(cached["neutral"])


@pytest.fixture(scope="module")
def happy(cached: dict[str, Path]) -> TrainingClip:
    return TrainingClip.load(cached["happy"])


def _uint8(images: torch.Tensor) -> np.ndarray:
    """(3, T, 96, 96) float [0, 1] -> (T, 96, 96, 3) uint8."""
    return np.round(images.permute(1, 2, 3, 0).numpy() * 255.0).astype(np.uint8)


def _window_start(clip: TrainingClip, frames: np.ndarray) -> int:
    """Where the (T, 96, 96, 3) frames sit in the clip."""
    hits = [i for i in range(len(clip.crops) - len(frames) + 1) if np.array_equal(clip.crops[i : i + len(frames)],
                                                                                 frames)]
    assert len(hits) == 1
    return hits[0]


# --- scan ------------------------------------------------------------------------------------------------------


def test_scan_real_mead_layout_keeps_front_view(media: Path, tmp_path: Path) -> None:
    _link(media, "talk_a.mp4", tmp_path / "M003" / "video" / "front" / "fear" / "level_3" / "012.mp4")
    _link(media, "talk_b.mp4", tmp_path / "M003" / "video" / "front" / "neutral" / "level_1" / "012.mp4")
    _link(media, "talk_c.mp4", tmp_path / "M003" / "video" / "left_30" / "fear" / "level_3" / "012.mp4")
    (tmp_path / "M003" / "audio").mkdir()
    (tmp_path / "M003" / "audio" / "notes.txt").write_text("not a video")
    assert scan(tmp_path) == [
        ClipInfo(tmp_path / "M003/video/front/fear/level_3/012.mp4", "M003", "fearful", 3, "012"),
        ClipInfo(tmp_path / "M003/video/front/neutral/level_1/012.mp4", "M003", "neutral", 1, "012"),
    ]


def test_scan_simple_mead_layout_and_other_layouts(media: Path, tmp_path: Path) -> None:
    _link(media, "talk_a.mp4", tmp_path / "W011" / "contempt" / "level_2" / "003.mp4")
    _link(media, "talk_b.mp4", tmp_path / "W011" / "surprised" / "level_1" / "003.MOV")
    _link(media, "talk_c.mp4", tmp_path / "bob" / "takes" / "monday" / "take1.mkv")
    _link(media, "talk_d.mp4", tmp_path / "loose.avi")
    _link(media, "talk_e.mp4", tmp_path / "x" / "bored" / "level_1" / "a.mp4")  # not an emotion folder
    assert scan(tmp_path) == [
        ClipInfo(tmp_path / "W011/contempt/level_2/003.mp4", "W011", "contempt", 2, "003"),
        ClipInfo(tmp_path / "W011/surprised/level_1/003.MOV", "W011", "surprised", 1, "003"),
        ClipInfo(tmp_path / "bob/takes/monday/take1.mkv", "bob", None, None, "take1"),
        ClipInfo(tmp_path / "loose.avi", "loose", None, None, "loose"),
        ClipInfo(tmp_path / "x/bored/level_1/a.mp4", "x", None, None, "a"),
    ]


# --- preprocess ------------------------------------------------------------------------------------------------


def test_preprocess_crops_faces_and_mel(cached: dict[str, Path], neutral: TrainingClip, happy: TrainingClip) -> None:
    for clip, name in ((neutral, "talk_a"), (happy, "talk_c")):
        with av.open(str(clip.info.path)) as c:
            n = c.streams.video[0].frames
        assert clip.crops.shape == (n, 96, 96, 3) and clip.crops.dtype == np.uint8
        assert clip.valid.shape == (n,) and clip.valid.mean() >= 0.98, name
        assert clip.fps == pytest.approx(25.0)
        assert clip.mel.dtype == np.float32 and clip.mel.shape[0] == 80
        assert abs(clip.mel.shape[1] - 80 * n / clip.fps) <= 8, name  # within 0.1 s of the video's duration
        assert clip.crops[clip.valid].std() > 20  # real images, not blank
        assert not clip.crops[~clip.valid].any()
    assert happy.info == ClipInfo(happy.info.path, "P1", "happy", 2, "001")


def test_preprocess_skips_cached_redoes_changed_and_survives_bad_files(
        media: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    video = tmp_path / "clips" / "b" / "talk_b.mp4"
    video.parent.mkdir(parents=True)
    shutil.copy(media / "talk_b.mp4", video)
    (tmp_path / "clips" / "bad" / "broken.mp4").parent.mkdir()
    (tmp_path / "clips" / "bad" / "broken.mp4").write_bytes(b"this is not a video" * 100)
    cache = tmp_path / "cache"
    clips = scan(tmp_path / "clips")
    assert [c.person for c in clips] == ["b", "bad"]
    with caplog.at_level(logging.WARNING, logger="livemood.training.data"):
        first = preprocess(clips, cache, progress=False)
    assert len(first) == 1 and "broken.mp4" in caplog.text
    mtime = first[0].stat().st_mtime_ns
    assert preprocess(clips, cache, progress=False) == first
    assert first[0].stat().st_mtime_ns == mtime  # not rewritten
    assert sorted(p.name for p in cache.iterdir()) == [first[0].name]  # no temporary files left
    st = video.stat()
    os.utime(video, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))
    redone = preprocess(clips, cache, progress=False)
    assert len(redone) == 1 and redone[0] != first[0] and redone[0].exists()


# --- datasets --------------------------------------------------------------------------------------------------


def test_dataset_sample_shapes_ranges_and_labels(neutral: TrainingClip, happy: TrainingClip) -> None:
    ds = TalkingFaceDataset([neutral, happy], frames=T, seed=3)
    assert len(ds) > 200
    sample = ds[len(ds) - 1]  # from the happy clip
    shapes = {"face": (6, T, 96, 96), "target": (3, T, 96, 96), "audio": (T, 1, 80, 16),
              "sync_audio": (1, 80, 16), "emotion": (len(EMOTIONS),), "intensity": ()}
    for key, shape in shapes.items():
        assert sample[key].shape == shape and sample[key].dtype == torch.float32, key
    for key in ("face", "target"):
        assert sample[key].min() >= 0.0 and sample[key].max() <= 1.0
    assert sample["emotion"].tolist() == [float(e == "happy") for e in EMOTIONS]
    assert sample["intensity"].item() == pytest.approx(2 / 3)
    assert ds[0]["emotion"][EMOTIONS.index("neutral")] == 1 and ds[0]["intensity"] == 0
    # Reproducible per (seed, index), also through a DataLoader.
    for key, value in ds[7].items():
        assert torch.equal(value, TalkingFaceDataset([neutral, happy], frames=T, seed=3)[7][key])
    batch = next(iter(DataLoader(ds, batch_size=4)))
    assert batch["face"].shape == (4, 6, T, 96, 96) and batch["intensity"].shape == (4,)


def test_dataset_masks_lower_half_and_uses_distant_reference(neutral: TrainingClip) -> None:
    ds = TalkingFaceDataset([neutral], frames=T)
    for index in (0, len(ds) // 2, len(ds) - 1):
        sample = ds[index]
        target = _uint8(sample["target"])
        i = _window_start(neutral, target)
        masked, reference = sample["face"][:3], sample["face"][3:]
        assert not masked[:, :, 48:].any()
        assert torch.equal(masked[:, :, :48], sample["target"][:, :, :48])
        j = _window_start(neutral, _uint8(reference))
        assert abs(j - i) >= T
        assert neutral.valid[i : i + T].all() and neutral.valid[j : j + T].all()
        for k in range(T):
            np.testing.assert_array_equal(sample["audio"][k, 0].numpy(), mel_window(neutral.mel, i + k, neutral.fps))
        np.testing.assert_array_equal(sample["sync_audio"][0].numpy(), mel_window(neutral.mel, i, neutral.fps))


def test_paired_dataset_takes_face_from_source_and_target_from_emotional_clip(
        neutral: TrainingClip, happy: TrainingClip) -> None:
    ds = TalkingFaceDataset([neutral, happy], frames=T, paired=True)
    assert ds.pairs == [(0, 1)]
    n_src, n_tgt = len(neutral.crops), len(happy.crops)
    assert n_src != n_tgt
    for index in (0, len(ds) // 3, len(ds) - 1):
        sample = ds[index]
        i = _window_start(happy, _uint8(sample["target"]))
        src = [round((i + k) * n_src / n_tgt) for k in range(T)]
        face = _uint8(sample["face"])  # (T, 96, 96, 6)
        np.testing.assert_array_equal(face[:, :48, :, :3], neutral.crops[src, :48])
        assert not face[:, 48:, :, :3].any()
        j = _window_start(neutral, face[..., 3:])
        assert abs(j - src[0]) >= T
        for k in range(T):
            np.testing.assert_array_equal(sample["audio"][k, 0].numpy(), mel_window(happy.mel, i + k, happy.fps))
        assert sample["emotion"][EMOTIONS.index("happy")] == 1


def test_paired_dataset_without_pairs_raises(neutral: TrainingClip, happy: TrainingClip) -> None:
    with pytest.raises(ValueError, match="same person and sentence"):
        TalkingFaceDataset([neutral], paired=True)
    other_sentence = TrainingClip(happy.crops, happy.valid, happy.mel, happy.fps,
                                  ClipInfo(happy.info.path, "P1", "happy", 2, "002"))
    with pytest.raises(ValueError, match="same person and sentence"):
        TalkingFaceDataset([neutral, other_sentence], paired=True)


def test_mead_clips_named_in_one_folder_pair_up(media: Path) -> None:
    """The shared MEAD clips (person_front_emotion_levelN_sentence.mp4) give one neutral/emotion group."""
    from livemood.training.data import paired_takes

    pairs = paired_takes(scan(media / "mead"))
    assert list(pairs) == [("M030", "001")]
    takes = pairs[("M030", "001")]
    assert set(takes) == set(EMOTIONS) and takes["fearful"].name == "M030_front_fear_level3_001.mp4"
