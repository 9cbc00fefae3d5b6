"""Shared fixtures: the real clips in ../shared/media and helpers to read videos back."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

MEDIA = Path(__file__).resolve().parents[1].parent / "shared" / "media"
CLIPS = sorted(MEDIA.glob("talk_*.mp4"))


@pytest.fixture(scope="session")
def media() -> Path:
    if not CLIPS:
        pytest.fail(f"the shared clips are missing: expected them in {MEDIA}")
    return MEDIA


def read_frames(path: Path, limit: int | None = None) -> list[np.ndarray]:
    """Decode a video's frames as BGR arrays."""
    with av.open(str(path)) as c:
        frames = []
        for frame in c.decode(c.streams.video[0]):
            frames.append(frame.to_ndarray(format="bgr24"))
            if limit is not None and len(frames) == limit:
                break
        return frames


def audio_packets(path: Path) -> list[tuple[int, bytes]]:
    """(pts, payload) of every audio packet of the first audio track."""
    with av.open(str(path)) as c:
        if not c.streams.audio:
            return []
        return [(p.pts, bytes(p)) for p in c.demux(c.streams.audio[0]) if p.dts is not None]
