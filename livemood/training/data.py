"""Training data for the emotion-conditioned Wav2Lip generator: find clips, cache their face crops and mel
spectrograms, and serve Wav2Lip-style training windows.

Three steps:

* `scan(root)` lists the videos under a folder with what their path says about them (person, emotion, level,
  sentence), understanding MEAD's layout.
* `preprocess(clips, cache_dir)` decodes each clip once, tracks the face (`livemood.face.FaceTracker`), crops every
  frame to Wav2Lip's 96x96 box (`livemood.face.align.wav2lip_transform`) and computes the clip's Wav2Lip mel spectrogram
  (`livemood.audio.mel.melspectrogram`), saving one `.npz` per clip. It is resumable and skips clips that fail.
* `TrainingClip.load(path)` reads a cache file back; `TalkingFaceDataset` cuts windows of consecutive frames from
  loaded clips, either from the same clip (Wav2Lip's self-reconstruction) or from neutral/emotional pairs of the
  same person and sentence (the Wav2Lip-Emotion setting).
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
import torch
from torch.utils.data import Dataset
from tqdm import tqdm

from livemood.atomic import AtomicFile, cannot_write
from livemood.audio.files import read_audio
from livemood.audio.mel import MEL_FPS, SAMPLE_RATE, WINDOW_FRAMES, AudioUnavailable, mel_window, melspectrogram
from livemood.config import EMOTIONS, UsageError
from livemood.face.align import WAV2LIP_CROP_SIZE, warp_crop, wav2lip_transform
from livemood.face.tracker import FaceTracker
from livemood.video import VideoReader

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = frozenset({".mp4", ".avi", ".mov", ".mkv"})
# MEAD's emotion folder names (and this project's own names) -> config.EMOTIONS
_EMOTION_FOLDERS: dict[str, str] = {**{e: e for e in EMOTIONS}, "fear": "fearful"}
_LEVEL_FOLDER = re.compile(r"level_(\d+)")
# MEAD clips gathered in one folder, as other projects ship them: <person>_<view>_<emotion>_level<n>_<sentence>.mp4
_MEAD_NAME = re.compile(r"(?P<person>[^_]+)_(?P<view>[a-z]+)_(?P<emotion>[a-z]+)_level_?(?P<level>\d+)"
                        r"_(?P<sentence>\w+)")
MEAD_VIEW = "front"  # the camera view kept from MEAD's multi-view recordings
MEAD_MAX_LEVEL = 3  # MEAD's intensity levels run 1..3


@dataclass(frozen=True)
class ClipInfo:
    """One video and what its place in the folder tree says about it. `emotion` is one of config.EMOTIONS or
    None when unknown; `level` is MEAD's intensity level (1..3) or None; `sentence` is the clip's id (file stem),
    shared by the recordings of one sentence in different emotions."""

    path: Path
    person: str
    emotion: str | None
    level: int | None
    sentence: str


def _parse(root: Path, path: Path) -> ClipInfo | None:
    """ClipInfo for a video at `path` under `root`, or None for a MEAD view other than `front`."""
    parts = path.relative_to(root).parts
    folders = parts[:-1]
    k = len(folders) - 1  # index of the clip's own folder
    level_match = _LEVEL_FOLDER.fullmatch(folders[k]) if k >= 1 else None
    emotion = _EMOTION_FOLDERS.get(folders[k - 1].lower()) if level_match else None
    if level_match is None or emotion is None:
        named = _MEAD_NAME.fullmatch(path.stem)
        if named and named["emotion"] in _EMOTION_FOLDERS:
            if named["view"] != MEAD_VIEW:
                return None
            return ClipInfo(path, named["person"], _EMOTION_FOLDERS[named["emotion"]], int(named["level"]),
                            named["sentence"])
        # not MEAD: person = first folder (or the file itself)
        return ClipInfo(path, folders[0] if folders else path.stem, None, None, path.stem)
    # <person>/video/<view>/<emotion>/level_<n>/ (real MEAD) or <person>/<emotion>/level_<n>/
    if k >= 3 and folders[k - 3] == "video":
        if folders[k - 2] != MEAD_VIEW:
            return None
        person_at = k - 4
    else:
        person_at = k - 2
    person = folders[person_at] if person_at >= 0 else root.name
    return ClipInfo(path, person, emotion, int(level_match.group(1)), path.stem)


def scan(root: Path) -> list[ClipInfo]:
    """Every video (.mp4, .avi, .mov, .mkv) under `root`, sorted by path.

    MEAD's layout `<person>/video/<view>/<emotion>/level_<n>/<clip>.mp4` (only view `front` kept), the simple
    `<person>/<emotion>/level_<n>/<clip>.mp4` and MEAD clips named `<person>_<view>_<emotion>_level<n>_<clip>.mp4`
    give person, emotion (`fear` becomes `fearful`) and level; in any
    other layout the person is the first folder under `root` (or the file's stem) and emotion and level are None.
    """
    root = Path(root)
    paths = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
    return [info for info in (_parse(root, p) for p in paths) if info is not None]


def paired_takes(clips: Sequence[ClipInfo]) -> dict[tuple[str, str], dict[str, Path]]:
    """Per (person, sentence) that has a neutral take and another emotion: each emotion's take at its strongest
    level (MEAD records levels 1-3), for judging or fitting against real actors."""
    best: dict[tuple[str, str], dict[str, tuple[int, Path]]] = {}
    for clip in clips:
        if clip.emotion is None or clip.level is None:
            continue
        takes = best.setdefault((clip.person, clip.sentence), {})
        if clip.emotion not in takes or clip.level > takes[clip.emotion][0]:
            takes[clip.emotion] = (clip.level, clip.path)
    return {key: {emotion: path for emotion, (_, path) in takes.items()} for key, takes in sorted(best.items())
            if "neutral" in takes and len(takes) > 1}


def cache_path(info: ClipInfo, cache_dir: Path) -> Path:
    """The cache file for a clip: named from a hash of its resolved path, size and modification time (so a
    changed video is redone) and its labels (so two links to one video under different labels stay apart)."""
    resolved = info.path.resolve()
    st = resolved.stat()
    key = "\0".join(map(str, (resolved, st.st_size, st.st_mtime_ns, info.person, info.emotion, info.level,
                              info.sentence)))
    digest = hashlib.sha256(key.encode()).hexdigest()[:20]
    readable = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{info.person}_{info.sentence}")[:60]
    return Path(cache_dir) / f"{readable}-{digest}.npz"


def _decode_faces(path: Path) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Crops (N, 96, 96, 3) uint8 BGR, valid (N,) bool, fps and the first frame's time (s) of a video.

    A frame is valid when the tracker observed the face in it. The tracker keeps returning the last face, with
    falling presence, for a few frames after losing it; those held faces are stale, so they count as missing.
    """
    size = WAV2LIP_CROP_SIZE
    crops: list[np.ndarray] = []
    valid: list[bool] = []
    with VideoReader(path) as reader, FaceTracker() as tracker:
        t_first = 0.0
        previous = None
        while (item := reader.read()) is not None:
            image, time_s = item
            if reader.count == 1:
                t_first = time_s
            face = tracker.track(image, round((reader.count - 1) * 1000.0 / reader.fps))  # ms
            seen = face is not None and (previous is None or face.presence >= previous.presence)
            crops.append(warp_crop(image, wav2lip_transform(face, size), size) if seen
                         else np.zeros((size, size, 3), np.uint8))
            valid.append(seen)
            previous = face
        fps = reader.fps
    if not any(valid):
        raise ValueError(f"no face found in {len(valid)} frames")
    return np.stack(crops), np.array(valid, dtype=bool), fps, t_first


def _clip_mel(path: Path, t_first_frame: float) -> np.ndarray:
    """The clip's Wav2Lip mel (80, T) float32, its frame 0 at the first video frame's time."""
    wav, t0 = read_audio(path)  # 16 kHz mono float32; t0 = time of its first sample, s
    shift = round((t0 - t_first_frame) * SAMPLE_RATE)  # samples the audio starts after the video
    wav = np.concatenate([np.zeros(shift, np.float32), wav]) if shift > 0 else wav[-shift:]
    mel = melspectrogram(wav)
    if mel.shape[1] < WINDOW_FRAMES:
        raise ValueError(f"audio too short: {mel.shape[1]} mel frames, need {WINDOW_FRAMES}")
    return mel


def _write_cache(info: ClipInfo, target: Path) -> None:
    """Preprocess one clip into `target`, atomically (`livemood.atomic`); a failing write (a full disk) raises
    RunError, which stops the run instead of skipping clip after clip."""
    crops, valid, fps, t_first = _decode_faces(info.path)
    mel = _clip_mel(info.path, t_first)
    try:
        with AtomicFile(target) as tmp, open(tmp, "wb") as f:
            np.savez_compressed(
                f, crops=crops, valid=valid, mel=mel, fps=np.float64(fps), path=str(info.path), person=info.person,
                emotion=info.emotion or "", level=np.int64(-1 if info.level is None else info.level),
                sentence=info.sentence)
    except OSError as e:
        raise cannot_write(target, e) from e


def preprocess(clips: Sequence[ClipInfo], cache_dir: Path, progress: bool = True) -> list[Path]:
    """Cache every clip's face crops and mel spectrogram in `cache_dir` (one `.npz` each, see `TrainingClip`).

    Frames are tracked at timestamps frame index / fps; frames without a face are stored as zeros with `valid`
    False. Clips whose cache file exists are skipped, so an interrupted run resumes. A clip that fails (unreadable,
    no audio, no face at all) is logged and left out. Returns the cache files of the clips that are ready, in
    the order of `clips`.
    """
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    ready: list[Path] = []
    for info in tqdm(clips, desc="preprocess", unit="clip", disable=not progress):
        try:
            target = cache_path(info, cache_dir)
            if target.exists():
                log.debug("cached: %s", info.path)
            else:
                _write_cache(info, target)
        except (AudioUnavailable, UsageError, av.FFmpegError, OSError, ValueError) as e:
            log.warning("skipping %s: %s", info.path, e)
            continue
        ready.append(target)
    return ready


@dataclass(frozen=True, eq=False)
class TrainingClip:
    """One preprocessed clip: `crops` (N, 96, 96, 3) uint8 BGR, `valid` (N,) bool (face observed), `mel`
    (80, T) float32 Wav2Lip mel at 80 frames/s whose frame 0 is at video frame 0, `fps` video frames/s."""

    crops: np.ndarray
    valid: np.ndarray
    mel: np.ndarray
    fps: float
    info: ClipInfo

    @classmethod
    def load(cls, path: Path) -> TrainingClip:
        """Read a cache file written by `preprocess`."""
        with np.load(path, allow_pickle=False) as z:
            level = int(z["level"])
            info = ClipInfo(Path(str(z["path"])), str(z["person"]), str(z["emotion"]) or None,
                            None if level < 0 else level, str(z["sentence"]))
            return cls(z["crops"], z["valid"].astype(bool), z["mel"].astype(np.float32), float(z["fps"]), info)


def _window_starts(valid: np.ndarray, frames: int) -> np.ndarray:
    """Starts i (int64) where valid[i : i + frames] is all True."""
    if valid.size < frames:
        return np.zeros(0, np.int64)
    runs = np.convolve(valid.astype(np.int64), np.ones(frames, np.int64), mode="valid")  # valid frames per window
    return np.flatnonzero(runs == frames)


def _emotion_label(info: ClipInfo) -> tuple[np.ndarray, float]:
    """One-hot (8,) over config.EMOTIONS (neutral when unknown) and intensity in [0, 1]."""
    emotion = info.emotion or "neutral"
    one_hot = np.zeros(len(EMOTIONS), np.float32)
    one_hot[EMOTIONS.index(emotion)] = 1.0
    if emotion == "neutral":
        return one_hot, 0.0
    if info.level is None:
        return one_hot, 1.0
    return one_hot, float(np.clip(info.level / MEAD_MAX_LEVEL, 0.0, 1.0))


def _find_pairs(clips: Sequence[TrainingClip]) -> list[tuple[int, int]]:
    """(source, target) clip indices: a neutral clip and a non-neutral one of the same person and sentence."""
    neutral: dict[tuple[str, str], list[int]] = {}
    for k, clip in enumerate(clips):
        if clip.info.emotion == "neutral":
            neutral.setdefault((clip.info.person, clip.info.sentence), []).append(k)
    return [(s, t) for t, clip in enumerate(clips) if clip.info.emotion not in (None, "neutral")
            for s in neutral.get((clip.info.person, clip.info.sentence), [])]


class TalkingFaceDataset(Dataset):
    """Wav2Lip training windows of `frames` consecutive frames from preprocessed clips.

    A sample is a dict of float32 tensors (T = `frames`, images BGR in [0, 1]):

    * "face" (6, T, 96, 96): channels 0-2 the window's source frames with the lower half (rows 48-95) zeroed,
      channels 3-5 a reference window: T consecutive source frames starting at a random position at least T frames
      from the window (Wav2Lip's "wrong window");
    * "target" (3, T, 96, 96): the frames to reconstruct;
    * "audio" (T, 1, 80, 16): the target clip's mel window of each target frame (`livemood.audio.mel.mel_window`);
    * "sync_audio" (1, 80, 16): the mel window of the first target frame (0.2 s, covering 5 frames at 25 fps);
    * "emotion" (8,): one-hot over config.EMOTIONS of the target clip's emotion (neutral when unknown);
    * "intensity" (): level / 3 clipped to [0, 1], 1.0 when the level is unknown, 0.0 for neutral.

    Unpaired, source and target are the same clip. With `paired`, each neutral clip is paired with every
    non-neutral clip of the same person and sentence: the face input comes from the neutral source, the target and
    audio from the emotional clip, target frame k matching source frame round(k · N_src / N_tgt).

    Windows are used only where every target frame and mapped source frame has a face, the audio covers every
    frame's mel window and a reference window exists. Random choices come from a generator seeded by (seed,
    index), so a sample is the same in any worker or process.
    """

    def __init__(self, clips: list[TrainingClip], frames: int = 5, paired: bool = False, seed: int = 0) -> None:
        if frames < 1:
            raise ValueError(f"frames must be >= 1, got {frames}")
        self.clips = list(clips)
        self.frames = frames
        self.paired = paired
        self.seed = seed
        self._face_starts = [_window_starts(c.valid, frames) for c in self.clips]
        if paired:
            self.pairs = _find_pairs(self.clips)
            if not self.pairs:
                raise ValueError("paired=True needs a neutral clip and an emotional clip of the same person and "
                                 "sentence; none found among the given clips")
        else:
            self.pairs = [(k, k) for k in range(len(self.clips))]
        starts = [self._usable_starts(s, t) for s, t in self.pairs]
        self._pair_of = np.concatenate([np.zeros(0, np.int64)] + [np.full(a.size, p) for p, a in enumerate(starts)])
        self._start = np.concatenate([np.zeros(0, np.int64), *starts])  # target window start per sample
        if self._start.size == 0:
            raise ValueError(f"no usable window of {frames} frames in the given clips")

    def _source_frames(self, source: int, target: int, frames: np.ndarray) -> np.ndarray:
        """Source frame indices matching target frame indices (proportional in time)."""
        n_src, n_tgt = len(self.clips[source].valid), len(self.clips[target].valid)
        return np.minimum(np.rint(frames * (n_src / n_tgt)).astype(np.int64), n_src - 1)

    def _usable_starts(self, source: int, target: int) -> np.ndarray:
        """Target window starts (int64) usable for the pair (see the class docstring)."""
        t = self.frames
        tgt = self.clips[target]
        starts = self._face_starts[target]
        last_mel = (starts + t - 1) * (MEL_FPS / tgt.fps)  # mel frame where the last frame's window starts
        starts = starts[last_mel.astype(np.int64) + WINDOW_FRAMES <= tgt.mel.shape[1]]
        src_valid = self.clips[source].valid
        mapped = self._source_frames(source, target, starts[:, None] + np.arange(t))  # (S, T)
        starts = starts[src_valid[mapped].all(axis=1)]
        ref = self._face_starts[source]
        if ref.size == 0:
            return ref
        first = self._source_frames(source, target, starts)
        return starts[(ref.min() <= first - t) | (ref.max() >= first + t)]

    def __len__(self) -> int:
        return int(self._start.size)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        rng = np.random.default_rng((self.seed, index))
        t = self.frames
        source, target = self.pairs[self._pair_of[index]]
        src, tgt = self.clips[source], self.clips[target]
        frames = self._start[index] + np.arange(t)  # target frame indices (T,)
        src_frames = self._source_frames(source, target, frames)
        ref_starts = self._face_starts[source]
        ref_start = rng.choice(ref_starts[np.abs(ref_starts - src_frames[0]) >= t])
        masked = src.crops[src_frames].copy()  # (T, 96, 96, 3) uint8
        masked[:, WAV2LIP_CROP_SIZE // 2:] = 0
        reference = src.crops[ref_start : ref_start + t]
        face = np.concatenate([masked, reference], axis=-1)  # (T, 96, 96, 6)
        audio = np.stack([mel_window(tgt.mel, int(f), tgt.fps) for f in frames])[:, None]  # (T, 1, 80, 16)
        emotion, intensity = _emotion_label(tgt.info)
        return {
            "face": _images(face),
            "target": _images(tgt.crops[frames]),
            "audio": torch.from_numpy(np.ascontiguousarray(audio, dtype=np.float32)),
            "sync_audio": torch.from_numpy(np.ascontiguousarray(audio[0], dtype=np.float32)),
            "emotion": torch.from_numpy(emotion),
            "intensity": torch.tensor(intensity, dtype=torch.float32),
        }


def _images(frames: np.ndarray) -> torch.Tensor:
    """(T, H, W, C) uint8 -> (C, T, H, W) float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(frames.transpose(3, 0, 1, 2), dtype=np.float32) / 255.0)
