"""The control panel and remote-control API: a small local web server on its own thread and asyncio loop.

`GET /` serves the panel (the files in livemood/live/panel); `/api/state` reads and changes the controls, every
change going through `ControlState.update` exactly like a hotkey; `/api/events` is a WebSocket of the state;
`/api/preview.mjpg` shows the output (see control_preview). The frame loop never waits for any of it: `publish`
stores a reference, `set_status` swaps a frozen snapshot, and a hotkey's change reaches the WebSockets through
`loop.call_soon_threadsafe`.

A web page the user happens to visit must not be able to drive or watch their camera, so every request must name
this server in its Host header (DNS rebinding), come from the panel's own origin if it says where it comes from
(CSRF, WebSocket hijacking) and, for the API, carry the token printed at start-up: `Authorization: Bearer TOKEN`,
`?token=TOKEN`, or the HttpOnly, SameSite=Strict cookie that `GET /?token=TOKEN` sets for the page's own requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from urllib.parse import quote

import numpy as np
from aiohttp import WSCloseCode, web

from livemood.config import EMOTIONS, UsageError
from livemood.controls import ControlState
from livemood.live.control_checks import (
    DEFAULT_HOST,
    MAX_BODY_BYTES,
    RequestGuard,
    check_changes,
    error_response,
    is_loopback,
    json_errors,
    parse_control_address,
    read_json,
    state_fields,
)
from livemood.live.control_preview import MjpegPreview
from livemood.live.keys import (
    BYPASS_KEYS,
    DOWN_KEYS,
    EMOTION_BY_KEY,
    LESS_KEYS,
    MORE_KEYS,
    NEUTRAL_KEYS,
    UP_KEYS,
    apply_key,
)
from livemood.live.sinks import Sink

__all__ = ["DEFAULT_HOST", "DEFAULT_PORT", "ControlServer", "PipelineStatus", "parse_control_address"]

log = logging.getLogger(__name__)

DEFAULT_PORT = 8765
TOKEN_BYTES = 32  # of randomness in a fresh token (43 URL-safe characters)
PORT_TRIES = 20  # with find_free_port: the asked port and the next 19
EVENT_EVERY_S = 1.0  # the WebSocket also sends the state this often when nothing changes (fps, latency, face)
START_TIMEOUT_S = 10.0  # for the server thread to be listening
CLOSE_TIMEOUT_S = 1.0  # at close(): for open streams to end before they are cancelled, and a WebSocket's goodbye
JOIN_TIMEOUT_S = 5.0  # the server thread is a daemon: never let close() hang on it
# The only files served, by URL path: (name in livemood/live/panel, content type). No path from a URL is ever joined.
PANEL_FILES: dict[str, tuple[str, str]] = {
    "/": ("index.html", "text/html"),
    "/panel.js": ("panel.js", "text/javascript"),
    "/panel.css": ("panel.css", "text/css"),
}
# The page loads only its own script, style, image stream and WebSocket, and refuses to be framed (clickjacking).
PAGE_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
UNAUTHORISED_PAGE = """<!doctype html><html lang="en"><head><meta charset="utf-8"><title>livemood</title>
<link rel="icon" href="data:,"><link rel="stylesheet" href="/panel.css"></head>
<body class="locked"><main><h1>livemood</h1><p>Open the link livemood printed when it started
(<code>control panel: http://…/?token=…</code>); the token changes on every run.</p></main></body></html>
"""


@dataclass(frozen=True)
class PipelineStatus:
    """What the pipeline last reported (about once a second); shown by the panel and in the state JSON."""

    engine: str | None = None  # e.g. "warp" or "neural (onnxruntime-cpu)"; None until the pipeline says
    face: bool = False  # a face was found in the latest frames
    fps: float = 0.0  # output frames per second
    latency_p50_ms: float | None = None  # capture to output, None before the first report
    latency_p95_ms: float | None = None


class PanelSink(Sink):
    """Hands every output frame to the panel's preview (a reference store; the server encodes on its own thread)."""

    def __init__(self, server: ControlServer) -> None:
        self._server = server

    def send(self, image: np.ndarray, time_s: float) -> None:
        self._server.publish(image)


def _url_host(host: str) -> str:
    """How `host` is written in a URL: a wildcard bind is reached through loopback, IPv6 in brackets."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)
    return f"[{host}]" if ":" in host else host


class ControlServer:
    """The panel and API on http://HOST:PORT, served from a daemon thread with its own asyncio loop.

    Args:
        state: the controls the panel shows and changes.
        host: the address to listen on; anything but loopback makes the panel reachable from the network (the
            token is then all that protects it, over plain HTTP), which is logged as a warning.
        port: the port to listen on; 0 lets the system pick one.
        token: the secret every API request must carry; None draws a fresh one for this run.
        find_free_port: when `port` is taken, try the next ones (up to PORT_TRIES) instead of failing.
        event_every_s: how often the WebSocket sends the state when it has not changed.

    `start` returns the panel's URL (with the token); `close` is safe to call twice. Use as a context manager.
    """

    def __init__(self, state: ControlState, host: str = DEFAULT_HOST, port: int = DEFAULT_PORT,
                 token: str | None = None, find_free_port: bool = True, event_every_s: float = EVENT_EVERY_S) -> None:
        self._state = state
        self._host = host
        self._port = port
        self._token = token if token is not None else secrets.token_urlsafe(TOKEN_BYTES)
        if not self._token or not all("!" <= c <= "~" for c in self._token):
            raise UsageError("--control-token must be printable ASCII without spaces (and not empty)")
        self._find_free_port = find_free_port
        self._event_every_s = event_every_s
        self._files = {name: resources.files(__package__).joinpath("panel", name).read_bytes()
                       for name, _ in PANEL_FILES.values()}
        self._status = PipelineStatus()
        self._status_lock = threading.Lock()
        self.preview = MjpegPreview()
        self._lock = threading.Lock()  # start() and close() may race from different threads
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unwatch = None
        self._closed = False
        self._guard = RequestGuard(self._token, host, host, port, loopback=True)  # replaced once bound
        self.port = port  # the bound port once started
        self.url = ""  # http://HOST:PORT/?token=TOKEN once started
        # Touched only on the server thread, inside its loop:
        self._runner: web.AppRunner | None = None
        # The tasks serving open WebSockets and MJPEG streams, each with a future that is done when its stream ends
        # (the task itself lives on while the connection is kept alive) and whether it may close gracefully.
        self._streams: dict[asyncio.Task, tuple[asyncio.Future[None], bool]] = {}
        self._encoder: asyncio.Task | None = None
        self._ws_wakers: set[asyncio.Event] = set()  # one per WebSocket, set when the state changed
        self._stopping = False

    # --- called from other threads -------------------------------------------------------------------------------

    @property
    def token(self) -> str:
        return self._token

    @property
    def running(self) -> bool:
        """Whether the server thread is alive."""
        return self._thread is not None and self._thread.is_alive()

    @property
    def status(self) -> PipelineStatus:
        return self._status

    def publish(self, image: np.ndarray) -> None:
        """Offer an output frame (BGR uint8, (H, W, 3)) to the preview; costs one reference store.

        The image is kept, not copied: the caller must not change it afterwards. Frames arriving faster than the
        preview's rate, or while a viewer is slow, are simply replaced by the next one.
        """
        self.preview.publish(image)

    def set_status(self, *, engine: str | None = None, face: bool | None = None, fps: float | None = None,
                   latency_ms: Mapping[str, float] | None = None) -> None:
        """Update what the panel shows about the pipeline; arguments left as None keep their value.

        `latency_ms` is a mapping with "p50" and "p95" in milliseconds, e.g. `StageTimes.latency_ms()`.
        """
        with self._status_lock:
            status = self._status
            self._status = PipelineStatus(
                engine=status.engine if engine is None else str(engine),
                face=status.face if face is None else bool(face),
                fps=status.fps if fps is None else round(float(fps), 1),
                latency_p50_ms=status.latency_p50_ms if latency_ms is None else round(float(latency_ms["p50"]), 1),
                latency_p95_ms=status.latency_p95_ms if latency_ms is None else round(float(latency_ms["p95"]), 1),
            )

    def state_json(self) -> dict[str, object]:
        """The state as /api/state returns it."""
        controls, status = self._state.get(), self._status
        out: dict[str, object] = {name: getattr(controls, name) for name in state_fields()}
        out.update(engine=status.engine, face=status.face, fps=status.fps,
                   latency_ms={"p50": status.latency_p50_ms, "p95": status.latency_p95_ms})
        return out

    def start(self) -> str:
        """Listen and serve; returns the panel's URL and logs it on one line. UsageError if no port can be bound."""
        with self._lock:
            if self._closed:
                raise RuntimeError("ControlServer cannot be started again after close()")
            if self._thread is not None:
                return self.url
            sock = self._bind()
            address, self.port = sock.getsockname()[:2]
            self._guard = RequestGuard(self._token, self._host, address, self.port, is_loopback(address))
            self.url = f"http://{_url_host(self._host)}:{self.port}/?token={quote(self._token, safe='-._~')}"
            self._loop = asyncio.new_event_loop()
            ready = threading.Event()
            failure: list[BaseException] = []
            self._thread = threading.Thread(target=self._run, args=(sock, ready, failure), name="livemood-control",
                                            daemon=True)
            self._thread.start()
            if not ready.wait(START_TIMEOUT_S) or failure:
                self._thread.join(JOIN_TIMEOUT_S)
                self._thread = None
                raise RuntimeError("the control panel's server did not start") from (failure[0] if failure else None)
            self._unwatch = self._state.watch(self._on_change)
        log.info("control panel: %s", self.url)
        if not self._guard.loopback:
            log.warning("control panel: listening on %s, reachable from the network over plain HTTP by anyone "
                        "who has the token", self._host)
        return self.url

    def close(self) -> None:
        """Stop serving: open streams end, the loop stops and the thread is joined. Safe to call twice."""
        with self._lock:
            self._closed = True
            thread, self._thread = self._thread, None
            unwatch, self._unwatch = self._unwatch, None
        if unwatch is not None:
            unwatch()
        if thread is None:
            return
        with contextlib.suppress(RuntimeError):  # the loop closed already: the thread is ending by itself
            self._loop.call_soon_threadsafe(self._loop.stop)
        if thread is not threading.current_thread():
            thread.join(JOIN_TIMEOUT_S)
            if thread.is_alive():
                log.warning("control panel: the server thread did not stop within %.0f s", JOIN_TIMEOUT_S)

    def __enter__(self) -> ControlServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _bind(self) -> socket.socket:
        """A listening socket on the first free port from the asked one (bound here, so errors are the caller's)."""
        try:
            infos = socket.getaddrinfo(self._host or None, None, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
        except socket.gaierror as e:
            raise UsageError(f"control panel: cannot resolve {self._host!r}: {e.strerror}") from e
        family, _, _, _, address = min(infos, key=lambda info: info[0] != socket.AF_INET)  # IPv4 first (localhost)
        tries = PORT_TRIES if self._find_free_port and self._port != 0 else 1
        error: OSError | None = None
        for port in range(self._port, min(self._port + tries, 65536)):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                if os.name == "posix":  # rebind through TIME_WAIT; on Windows this would let two servers share
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address[0], port, *address[2:]))
                sock.listen(128)
                sock.setblocking(False)
                return sock
            except OSError as e:
                sock.close()
                error = e
        tried = f"ports {self._port}..{port}" if tries > 1 else f"port {self._port}"
        raise UsageError(f"control panel: cannot listen on {self._host} {tried}: {error.strerror if error else ''}")

    def _on_change(self, _controls: object) -> None:
        # On the updating thread (a hotkey, the terminal, this server): hop onto the loop. Reading `get` there,
        # rather than sending `_controls`, means two quick updates can never leave an older value on the page.
        loop = self._loop
        with contextlib.suppress(RuntimeError):  # RuntimeError: the loop already closed, nobody to tell
            loop.call_soon_threadsafe(self._wake_websockets)

    # --- the server thread ---------------------------------------------------------------------------------------

    def _run(self, sock: socket.socket, ready: threading.Event, failure: list[BaseException]) -> None:
        loop = self._loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._serve(sock))
        except BaseException as e:
            failure.append(e)
            sock.close()
            ready.set()
            loop.close()
            return
        ready.set()
        try:
            loop.run_forever()
        finally:
            try:
                loop.run_until_complete(self._shutdown())
            except Exception:
                log.exception("control panel: shutting down failed")
            loop.close()

    async def _serve(self, sock: socket.socket) -> None:
        app = web.Application(client_max_size=MAX_BODY_BYTES, middlewares=[json_errors, self._guarded])
        for path in PANEL_FILES:
            app.router.add_get(path, self._file, allow_head=False)
        app.router.add_get("/api/state", self._get_state, allow_head=False)
        app.router.add_post("/api/state", self._post_state)
        app.router.add_get("/api/keys", self._get_keys, allow_head=False)
        app.router.add_post("/api/key", self._post_key)
        app.router.add_get("/api/events", self._events, allow_head=False)
        app.router.add_get("/api/preview.mjpg", self._preview, allow_head=False)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=CLOSE_TIMEOUT_S)
        await self._runner.setup()
        await web.SockSite(self._runner, sock).start()
        self._encoder = self.preview.start()

    async def _shutdown(self) -> None:
        self._stopping = True
        self._wake_websockets()
        self.preview.stop()
        # A preview has no goodbye to send and may be stuck writing to a client that does not read: cancel it now.
        # A WebSocket gets CLOSE_TIMEOUT_S to close properly.
        for task, (_, graceful) in self._streams.items():
            if not graceful:
                task.cancel()
        ends = [ended for ended, _ in self._streams.values()]
        if self._encoder is not None:
            self._encoder.cancel()
            ends.append(self._encoder)
        await asyncio.wait(ends, timeout=CLOSE_TIMEOUT_S)
        for task in self._streams:
            task.cancel()
        if self._streams:
            await asyncio.wait([ended for ended, _ in self._streams.values()], timeout=CLOSE_TIMEOUT_S)
        if self._runner is not None:
            await self._runner.cleanup()

    @contextlib.contextmanager
    def _stream(self, graceful: bool) -> Iterator[None]:
        """Mark the current handler as serving a stream, so that `_shutdown` ends it (`graceful`: let it close)."""
        task = asyncio.current_task()
        ended = asyncio.get_running_loop().create_future()
        self._streams[task] = (ended, graceful)
        try:
            yield
        finally:
            del self._streams[task]
            ended.set_result(None)

    def _wake_websockets(self) -> None:
        for waker in self._ws_wakers:
            waker.set()

    @web.middleware
    async def _guarded(self, request: web.Request, handler: web.Handler) -> web.StreamResponse:
        refusal = self._guard.refusal(request)
        return refusal if refusal is not None else await handler(request)

    async def _file(self, request: web.Request) -> web.Response:
        name, content_type = PANEL_FILES[request.path]
        if name != "index.html":
            return web.Response(body=self._files[name], content_type=content_type, charset="utf-8",
                                headers={"Cache-Control": "no-cache"})
        if not self._guard.authorised(request):
            return web.Response(status=401, text=UNAUTHORISED_PAGE, content_type=content_type, headers=PAGE_HEADERS)
        response = web.Response(body=self._files[name], content_type=content_type, charset="utf-8",
                                headers=PAGE_HEADERS)
        response.set_cookie(self._guard.cookie, self._token, httponly=True, samesite="Strict", path="/")
        return response

    async def _get_state(self, request: web.Request) -> web.Response:
        return web.json_response(self.state_json())

    async def _post_state(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        try:
            changes = check_changes(body, self._state.get())
            if changes:
                self._state.update(**changes)
        except UsageError as e:
            return error_response(400, str(e))
        return web.json_response(self.state_json())

    async def _get_keys(self, request: web.Request) -> web.Response:
        # The hotkeys' own map, so the page's shortcuts can never drift from the terminal's and the hotkeys'.
        return web.json_response({"emotions": list(EMOTIONS), "emotion_keys": EMOTION_BY_KEY, "up": list(UP_KEYS),
                                  "down": list(DOWN_KEYS), "bypass": list(BYPASS_KEYS), "more": list(MORE_KEYS),
                                  "less": list(LESS_KEYS), "neutral": list(NEUTRAL_KEYS)})

    async def _post_key(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        key = body.get("key") if isinstance(body, dict) and len(body) == 1 else None
        if key not in (*EMOTION_BY_KEY, *UP_KEYS, *DOWN_KEYS, *BYPASS_KEYS, *MORE_KEYS, *LESS_KEYS, *NEUTRAL_KEYS):
            return error_response(400, 'the body must be {"key": K} with K one of the panel\'s keys')
        apply_key(self._state, key)  # the hotkeys' own stepping, so '+' on the page is '+' in the terminal
        return web.json_response(self.state_json())

    async def _events(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(timeout=CLOSE_TIMEOUT_S, max_msg_size=MAX_BODY_BYTES)  # timeout: for its close
        await ws.prepare(request)
        waker = asyncio.Event()
        self._ws_wakers.add(waker)

        async def read() -> None:  # the client sends nothing useful, but its close must be seen
            try:
                async for _ in ws:
                    pass
            finally:
                waker.set()

        reader = asyncio.ensure_future(read())
        try:
            with self._stream(graceful=True):
                while not (self._stopping or reader.done() or ws.closed):
                    waker.clear()
                    await ws.send_json(self.state_json())
                    with contextlib.suppress(asyncio.TimeoutError):
                        await asyncio.wait_for(waker.wait(), self._event_every_s)
        except ConnectionError:
            pass  # the client went away mid-send
        finally:
            self._ws_wakers.discard(waker)
            reader.cancel()
            if not ws.closed:
                await ws.close(code=WSCloseCode.GOING_AWAY)
        return ws

    async def _preview(self, request: web.Request) -> web.StreamResponse:
        with self._stream(graceful=False):
            return await self.preview.stream(request)
