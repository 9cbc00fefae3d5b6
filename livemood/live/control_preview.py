"""The control panel's preview: the output as an MJPEG stream, paid for on the server's thread and only when watched.

The pipeline hands over each output frame with `publish`, which only stores a reference in a latest-only slot. On
the server's loop one encoder task scales the newest frame down and JPEG-encodes it, at most `max_fps` times a
second and only while a viewer is connected; every viewer is sent that same JPEG. A viewer that reads slowly waits
in its own write and skips to the newest JPEG when it can take one: it never holds up the encoder or the pipeline.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque

import cv2
import numpy as np
from aiohttp import hdrs, web

from livemood.frames import now

log = logging.getLogger(__name__)

PREVIEW_MAX_FPS = 15.0  # the stream never carries more frames than this per second
PREVIEW_MAX_WIDTH = 640  # pixels; wider output is scaled down, keeping its aspect, before encoding
PREVIEW_JPEG_QUALITY = 80  # cv2.IMWRITE_JPEG_QUALITY, 0..100
ENCODE_SAMPLES = 1024  # encode durations kept for benchmarks: the latest ~68 s at 15 fps
BOUNDARY = b"livemood-frame"  # multipart boundary


class MjpegPreview:
    """Latest-only frame slot, one shared encoder, any number of MJPEG viewers.

    `publish` and `take_encode_times_s` may be called from any thread; `start`, `stop` and `stream` run on the loop.
    """

    def __init__(self, max_fps: float = PREVIEW_MAX_FPS, max_width: int = PREVIEW_MAX_WIDTH,
                 quality: int = PREVIEW_JPEG_QUALITY) -> None:
        self._interval_s = 1.0 / max_fps
        self._max_width = max_width
        self._params = [cv2.IMWRITE_JPEG_QUALITY, quality]
        self._latest: np.ndarray | None = None  # swapped whole by publish(), never copied or changed
        self._encode_times: deque[float] = deque(maxlen=ENCODE_SAMPLES)  # seconds, appended on the loop's thread
        # On the loop only:
        self._jpeg: bytes | None = None  # the newest encoded frame, shared by every viewer
        self._frame_ready = asyncio.Event()  # replaced by a fresh one after each encode, so waiters all wake
        self._viewer_joined = asyncio.Event()
        self._viewers = 0
        self._stopping = False
        self._failed = False

    def publish(self, image: np.ndarray) -> None:
        """Offer a frame (BGR uint8, (H, W, 3)); the caller must not change it afterwards."""
        self._latest = image  # one reference store: atomic under the GIL, and all the pipeline ever pays

    def take_encode_times_s(self) -> list[float]:
        """The encode durations (scale + JPEG) since the last call, in seconds, oldest first (at most the latest
        ENCODE_SAMPLES)."""
        taken = []
        while self._encode_times:  # only this caller pops, so the deque cannot empty under it
            taken.append(self._encode_times.popleft())
        return taken

    @property
    def viewers(self) -> int:
        return self._viewers

    def start(self) -> asyncio.Task:
        """Start the encoder on the running loop; the caller cancels or awaits the task after `stop`."""
        self._frame_ready = asyncio.Event()
        self._viewer_joined = asyncio.Event()
        return asyncio.ensure_future(self._encode_loop())

    def stop(self) -> None:
        """Make the encoder and every open stream end."""
        self._stopping = True
        self._frame_ready.set()
        self._viewer_joined.set()

    async def stream(self, request: web.Request) -> web.StreamResponse:
        """Answer a request with multipart/x-mixed-replace JPEGs until the client leaves or `stop` is called."""
        response = web.StreamResponse(headers={
            hdrs.CONTENT_TYPE: f"multipart/x-mixed-replace; boundary={BOUNDARY.decode()}",
            hdrs.CACHE_CONTROL: "no-store",
        })
        await response.prepare(request)
        self._viewers += 1
        self._viewer_joined.set()
        sent: bytes | None = None
        try:
            while not self._stopping:
                frame_ready, jpeg = self._frame_ready, self._jpeg
                if jpeg is None or jpeg is sent:
                    await frame_ready.wait()
                    continue
                sent = jpeg
                # Only this viewer waits here while its client is slow; newer JPEGs replace `_jpeg` meanwhile.
                await response.write(b"--%s\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n%s\r\n"
                                     % (BOUNDARY, len(jpeg), jpeg))
        except ConnectionError:
            pass  # the viewer went away
        finally:
            self._viewers -= 1
        return response

    async def _encode_loop(self) -> None:
        loop = asyncio.get_running_loop()
        encoded: np.ndarray | None = None  # the frame last encoded, kept so that `is` tells a new one
        due = loop.time()
        while not self._stopping:
            if self._viewers == 0:
                self._viewer_joined.clear()
                await self._viewer_joined.wait()
                continue
            started = loop.time()
            image = self._latest
            if image is not None and image is not encoded:
                encoded = image
                jpeg = self._encode(image)
                if jpeg is not None:
                    self._jpeg = jpeg
                    frame_ready, self._frame_ready = self._frame_ready, asyncio.Event()
                    frame_ready.set()
            due = max(due, started) + self._interval_s  # never two encodes closer than the interval
            await asyncio.sleep(due - loop.time())

    def _encode(self, image: np.ndarray) -> bytes | None:
        # On the loop's thread; cv2 releases the GIL, so the frame loop runs meanwhile. Scaling 1280x720 to 640x360
        # first makes the JPEG step ~4x cheaper.
        t0 = now()
        try:
            height, width = image.shape[:2]
            if width > self._max_width:
                size = (self._max_width, max(1, round(height * self._max_width / width)))
                image = cv2.resize(image, size, interpolation=cv2.INTER_AREA)
            ok, buffer = cv2.imencode(".jpg", image, self._params)
            if not ok:
                raise ValueError("cv2.imencode refused the frame")
        except (cv2.error, ValueError, AttributeError) as e:
            if not self._failed:  # once: a broken frame type would otherwise log 15 times a second
                log.warning("control panel: cannot show the preview: %s", e)
                self._failed = True
            return None
        self._encode_times.append(now() - t0)
        return buffer.tobytes()
