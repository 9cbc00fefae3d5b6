"""PortAudio through sounddevice: loading it, choosing a device, and anchoring a device stream on the pipeline clock.

The microphone, the delayed audio out and `livemood devices` all go through here.
"""

from __future__ import annotations

from typing import Any

from livemood.audio.mel import AudioUnavailable

ANCHOR_MAX_DRIFT = 2e-4  # s/s: sound card and pipeline clocks differ by well under 200 ppm
ANCHOR_RESYNC_S = 0.1  # s; a reading this far off means the stream restarted: take it as is


def load_sounddevice() -> Any:
    """Import sounddevice, turning a missing PortAudio into AudioUnavailable."""
    try:
        import sounddevice
    except OSError as e:  # the Python package is there, the PortAudio library is not
        raise AudioUnavailable(
            f"PortAudio is not available ({e}); install it (Debian/Ubuntu: apt-get install libportaudio2)"
        ) from e
    except ImportError as e:
        raise AudioUnavailable(f"the sounddevice package is not installed ({e}): pip install sounddevice") from e
    return sounddevice


def resolve_device(sd: Any, device: int | str | None, kind: str) -> dict:
    """PortAudio's description of an input/output device chosen by index, (part of a) name, or None = default."""
    try:
        return dict(sd.query_devices(device, kind=kind))
    except (ValueError, sd.PortAudioError) as e:
        channels = "max_input_channels" if kind == "input" else "max_output_channels"
        names = [f"{d['index']}: {d['name']}" for d in sd.query_devices() if d[channels] > 0]
        found = "; ".join(names) if names else "none found"
        what = "default" if device is None else repr(device)
        raise AudioUnavailable(f"no {kind} audio device {what} ({e}); {kind} devices: {found}") from e


class ClockAnchor:
    """Estimates the pipeline-clock time of sample 0 of a device stream from noisy per-block readings.

    Each reading is "time of this block's first sample" minus its index / rate. Callbacks run late, never early,
    and buffers deliver in bursts, so readings are never before the truth: the estimate is their lower envelope.
    It drops to any earlier reading at once and rises at most ANCHOR_MAX_DRIFT (the most two clocks drift apart)
    so late readings cannot pull it; a reading ANCHOR_RESYNC_S later means the stream restarted and is taken.
    """

    def __init__(self) -> None:
        self.value: float | None = None

    def update(self, reading: float, elapsed_s: float) -> float:
        """Take a reading (s), `elapsed_s` of audio after the previous one; returns the current estimate (s)."""
        if self.value is None or reading < self.value or reading - self.value > ANCHOR_RESYNC_S:
            self.value = reading
        else:
            self.value += min(reading - self.value, ANCHOR_MAX_DRIFT * elapsed_s)
        return self.value
