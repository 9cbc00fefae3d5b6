"""The pipeline's audio side: a mel window for every video frame, from a file's track or the microphone.

Both paths end in one `MelBuffer`. A file's track is decoded lazily, just far enough for the frame asked about; a
microphone is drained once per tick, its blocks also going to the delayed audio out when one is open. Frame times
and audio stamps share a timeline: the file's presentation time, or the pipeline clock for live sources.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from livemood.audio.delayed_out import DelayedAudioOut
from livemood.audio.files import iter_file_audio
from livemood.audio.mel import DEFAULT_LOOKAHEAD, AudioUnavailable, Lookahead, MelBuffer
from livemood.audio.microphone import Microphone

log = logging.getLogger(__name__)

MAX_EXTRA_WAIT_S = 0.3  # a live frame waits at most this long past its look-ahead for late audio, then goes without


class AudioFeed:
    """Mel windows for frame times; `poll` takes in what the microphone has recorded since the last call."""

    def __init__(self, lookahead: Lookahead = DEFAULT_LOOKAHEAD, file: Path | None = None,
                 microphone: Microphone | None = None, audio_out: DelayedAudioOut | None = None) -> None:
        if (file is None) == (microphone is None):
            raise ValueError("an AudioFeed reads either a file or a microphone")
        self.buffer = MelBuffer(lookahead)
        self.lookahead = lookahead
        self._blocks: Iterator[tuple[np.ndarray, float]] | None = iter_file_audio(file) if file else None
        self.microphone = microphone
        self.audio_out = audio_out

    @property
    def live(self) -> bool:
        return self.microphone is not None

    @property
    def stalled(self) -> bool:
        """The microphone is lost and being reopened: live frames should not wait for its audio."""
        return self.microphone is not None and self.microphone.outage.active

    @property
    def wait_s(self) -> float:
        """How long after its time a live frame's window becomes available (the look-ahead), in seconds."""
        return self.lookahead.added_latency_ms / 1e3 if self.live else 0.0

    def poll(self) -> None:
        """Move the microphone's new blocks into the mel buffer and the delayed audio out."""
        if self.microphone is None:
            return
        for samples, t_start in self.microphone.read():
            self.buffer.push(samples, t_start)
            if self.audio_out is not None:
                self.audio_out.write(samples, t_start)

    def window(self, t: float) -> np.ndarray | None:
        """(80, 16) window for a frame at time t (s); None while a live frame's audio has not all arrived."""
        if self._blocks is None:
            return self.buffer.window(t)
        while (window := self.buffer.window(t)) is None:
            block = next(self._blocks, None)
            if block is None:  # the track has ended: windows past it are its last 16 frames
                self._blocks = None
                self.buffer.finish()
                return self.buffer.window(t)
            self.buffer.push(*block)
        return window

    def set_output_delay(self, seconds: float) -> None:
        """Delay the audio out by the video's measured latency, so the call's sound lines up with the picture."""
        if self.audio_out is not None:
            self.audio_out.delay_s = seconds

    def close(self) -> None:
        """Stop the microphone and the audio out. Safe to call twice."""
        for device in (self.microphone, self.audio_out):
            if device is not None:
                device.close()


def open_audio_feed(live: bool, file: Path | None, needed: bool, mic: str | None, audio_out: str | None,
                    lookahead: Lookahead) -> AudioFeed | None:
    """The feed this run needs, or None (with a warning) where audio is wanted but not available.

    `needed` is the engine's need: without audio it cannot start, so unavailability raises AudioUnavailable.
    Otherwise audio is opened only to play it delayed (`audio_out`), and a missing device means video only.
    """
    if not needed and audio_out is None:
        return None
    try:
        if not live:
            if file is None:
                raise AudioUnavailable("this source has no audio track")
            return AudioFeed(lookahead, file=file)
        microphone = Microphone(_device(mic))
        try:
            out = DelayedAudioOut(_device(audio_out)) if audio_out is not None else None
        except BaseException:
            microphone.close()
            raise
        return AudioFeed(lookahead, microphone=microphone, audio_out=out)
    except AudioUnavailable as e:
        if needed:
            raise
        log.warning("%s; running video only", e)
        return None


def _device(name: str | None) -> int | str | None:
    """A device given on the command line: an index, a name, or None for the system default."""
    return int(name) if name is not None and name.isdigit() else name
