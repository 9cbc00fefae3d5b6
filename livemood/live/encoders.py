"""Which encoder and timing a video file gets, from its container (the output's extension).

H.264 wherever the container takes it; otherwise the container's own codec when livemood knows how to set its
quality (VP9 for .webm, GIF for .gif); otherwise H.264 again, which containers such as MPEG-TS and
FLV take without saying so, and which a container that truly refuses it turns into one clear line.
"""

from __future__ import annotations

from fractions import Fraction

import av

# The default: near-transparent quality at a fast encoding speed. PyAV's wheels carry libx264; a build without it
# falls back to MPEG-4 Part 2, which every container that takes H.264 takes too.
H264 = "libx264" if "libx264" in av.codecs_available else "mpeg4"
ENCODER_OPTIONS: dict[str, dict[str, str]] = {
    "libx264": {"crf": "18", "preset": "veryfast"},
    # Constant quality (b=0 lifts the bit-rate cap), libvpx's "good" mode at a speed fit for a whole video.
    "libvpx-vp9": {"crf": "32", "b": "0", "deadline": "good", "cpu-used": "5", "row-mt": "1"},
    "gif": {},
    "mpeg4": {},
}
AVFMT_VARIABLE_FPS = 0x0400  # libavformat/avformat.h: the container stores each frame's time, not one frame rate
FPS_DENOMINATOR_MAX = 100000  # a frame rate as a fraction: 29.97 is 30000/1001


class ContainerRefused(ValueError):
    """The container takes none of the encoders livemood uses."""


def video_encoder(out: av.container.OutputContainer) -> str:
    """The encoder for `out`'s video (see the module docstring)."""
    if H264 in out.supported_codecs:
        return H264
    own = out.default_video_codec
    encoder = av.Codec(own, "w").name if own != "none" and own in av.codecs_available else None
    return encoder if encoder in ENCODER_OPTIONS else H264


def add_video_stream(out: av.container.OutputContainer, size: tuple[int, int], fps: float,
                     time_base: Fraction) -> av.video.stream.VideoStream:
    """A video stream of `size` (width, height) for frames stamped in `time_base` (seconds per tick).

    A container with one frame rate for the whole file (AVI) gets its ticks as frames, `1 / fps`, so that its header
    tells the real frame rate and count, and no B-frames; the codec context's `time_base` is the one to stamp frames
    in.
    """
    encoder = video_encoder(out)
    rate = Fraction(fps).limit_denominator(FPS_DENOMINATOR_MAX)
    try:
        stream = out.add_stream(encoder, rate=rate)
    except ValueError as e:  # PyAV's check against the container's list of codecs
        raise ContainerRefused(f"the {out.format.name} format takes no video livemood encodes (it writes .mp4, "
                               ".mkv, .mov, .avi, .webm and .gif, among others)") from e
    stream.width, stream.height = size
    formats = [f.name for f in stream.codec_context.codec.video_formats or ()]
    even = size[0] % 2 == 0 and size[1] % 2 == 0
    # 4:2:0 halves the chroma planes, so an odd size keeps full chroma where the encoder can.
    wanted = "yuv420p" if even or "yuv444p" not in formats else "yuv444p"
    stream.pix_fmt = wanted if wanted in formats or not formats else formats[0]  # GIF: its own palette format
    options = dict(ENCODER_OPTIONS.get(encoder, {}))
    if out.format.flags & AVFMT_VARIABLE_FPS:
        stream.codec_context.time_base = time_base
        stream.time_base = time_base
    else:
        stream.codec_context.time_base = 1 / rate
        stream.time_base = 1 / rate
        options["bf"] = "0"  # such containers store no presentation times: frames must come in display order
        # AAC's priming starts the sound 23 ms before 0; shifting every stream by that would round the video
        # into a one-frame gap (and one frame too many in the header).
        out.container_options["avoid_negative_ts"] = "disabled"
    stream.options = options
    return stream


def audio_encoder(out: av.container.OutputContainer) -> av.Codec | None:
    """The encoder for sound the container does not take as it is (AAC into WebM: Opus); None if it has no sound."""
    own = out.default_audio_codec
    return av.Codec(own, "w") if own != "none" else None


def audio_rate(codec: av.Codec, rate: int) -> int:
    """The sample rate (Hz) nearest above `rate` that `codec` encodes (Opus: 8 to 48 kHz), `rate` if it takes any."""
    rates = sorted(codec.audio_rates or ())
    if not rates or rate in rates:
        return rate
    return next((r for r in rates if r >= rate), rates[-1])
