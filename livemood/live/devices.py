"""`livemood devices`: what this machine offers — cameras, microphones, and a usable virtual camera or why not."""

from __future__ import annotations

import glob
import sys

import cv2

from livemood.audio.mel import AudioUnavailable
from livemood.audio.portaudio import load_sounddevice
from livemood.config import UsageError
from livemood.live.sources import opencv_api

PROBE_INDICES = range(6)  # camera indices tried where devices cannot be listed


def cameras() -> list[str]:
    """One line per camera that opens and gives a frame: index, size and reported fps."""
    if sys.platform.startswith("linux"):
        indices = sorted(int(p.removeprefix("/dev/video")) for p in glob.glob("/dev/video[0-9]*"))
    else:
        indices = list(PROBE_INDICES)
    found = []
    for index in indices:
        cap = cv2.VideoCapture(index, opencv_api(index))
        try:
            ok, frame = cap.read() if cap.isOpened() else (False, None)
            if ok and frame is not None:
                fps = cap.get(cv2.CAP_PROP_FPS)
                found.append(f"{index}: {frame.shape[1]}x{frame.shape[0]} @ {fps:g} fps (--source {index})")
        finally:
            cap.release()
    return found


def audio_devices(kind: str) -> list[str]:
    """One line per PortAudio device with `kind` ("input" or "output") channels, or one line saying why none."""
    try:
        devices = load_sounddevice().query_devices()
    except AudioUnavailable as e:
        return [f"(none: {e})"]
    key = f"max_{kind}_channels"
    lines = [f"{i}: {d['name']} ({d[key]} ch, {d['default_samplerate']:g} Hz)"
             for i, d in enumerate(devices) if d[key] > 0]
    return lines or ["(none found)"]


def virtual_camera() -> str:
    """Which virtual camera frames would go to, or the reason none is usable and how to get one."""
    from livemood.live.sinks import VirtualCameraSink

    try:
        sink = VirtualCameraSink((640, 480), 30.0)
    except UsageError as e:
        return str(e)
    try:
        return f"usable: {sink.device} (sending {sink.fmt.name})"
    finally:
        sink.close()


def report() -> str:
    cams = cameras() or ["(none found)"]
    return "\n".join(
        ["cameras:", *(f"  {c}" for c in cams),
         "microphones (--mic):", *(f"  {m}" for m in audio_devices("input")),
         "audio outputs (--audio-out):", *(f"  {m}" for m in audio_devices("output")),
         "virtual camera:", f"  {virtual_camera()}"]
    )
