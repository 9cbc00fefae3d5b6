"""The control panel's server through a real server on loopback: the state API and its checks, the token, Origin and
Host guards, the WebSocket of state changes (hotkeys included), and the MJPEG preview with fast and slow viewers.
Also `ControlState.watch`, which the WebSocket relies on."""

from __future__ import annotations

import asyncio
import dataclasses
import http.client
import json
import logging
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import quote

import aiohttp
import cv2
import numpy as np
import pytest

from livemood.config import EMOTIONS, Controls, UsageError
from livemood.controls import ControlState
from livemood.live.control import ControlServer, parse_control_address
from livemood.live.control_checks import MAX_BODY_BYTES
from livemood.live.control_preview import PREVIEW_MAX_FPS, PREVIEW_MAX_WIDTH
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

WAIT_S = 10.0  # a guard against hanging if the server is broken, never a timing check
HAS_EXPRESSIVENESS = "expressiveness" in {f.name for f in dataclasses.fields(Controls)}


# --- ControlState.watch --------------------------------------------------------------------------------------------

def test_watchers_see_each_update_after_it_and_can_stop() -> None:
    state = ControlState(Controls())
    seen: list[tuple[Controls, Controls]] = []
    unwatch = state.watch(lambda controls: seen.append((controls, state.get())))  # get(): the lock is free
    state.update(emotion="sad")
    state.update(intensity=0.4)
    assert [c for c, _ in seen] == [Controls("sad"), Controls("sad", 0.4)]
    assert all(c == now for c, now in seen)
    unwatch()
    unwatch()  # safe twice
    state.update(emotion="happy")
    assert len(seen) == 2


def test_a_failing_watcher_neither_undoes_the_change_nor_stops_the_others(caplog: pytest.LogCaptureFixture) -> None:
    state = ControlState(Controls())
    seen: list[str] = []

    def broken(controls: Controls) -> None:
        raise RuntimeError("watcher broke")

    state.watch(broken)
    state.watch(lambda controls: seen.append(controls.emotion))
    assert state.update(emotion="angry").emotion == "angry"
    assert seen == ["angry"] and state.get().emotion == "angry"
    assert "watcher failed" in caplog.text


def test_an_invalid_update_tells_no_watcher() -> None:
    state = ControlState(Controls())
    seen: list[Controls] = []
    state.watch(seen.append)
    with pytest.raises(UsageError):
        state.update(emotion="bored")
    assert seen == [] and state.get() == Controls()


# --- --control [HOST:]PORT --------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "expected"), [
    ("8765", ("127.0.0.1", 8765)),
    ("0", ("127.0.0.1", 0)),
    ("0.0.0.0:9000", ("0.0.0.0", 9000)),
    ("localhost:8765", ("localhost", 8765)),
    ("[::1]:8765", ("::1", 8765)),
])
def test_control_address_parses(text: str, expected: tuple[str, int]) -> None:
    assert parse_control_address(text) == expected


@pytest.mark.parametrize("text", ["", "abc", "host:", ":8765", "::1:8765", "[::1]", "[::1]x:80", "h:70000", "h:-1",
                                  "h:8a", "a b:80", "http://h:80"])
def test_control_address_refuses_bad_text(text: str) -> None:
    with pytest.raises(UsageError, match="--control"):
        parse_control_address(text)


# --- a real server on loopback -------------------------------------------------------------------------------------

@pytest.fixture
def state() -> ControlState:
    return ControlState(Controls())


@pytest.fixture
def server(state: ControlState) -> Iterator[ControlServer]:
    with ControlServer(state, port=0) as running:
        yield running


@dataclass(frozen=True)
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> dict:
        return json.loads(self.body)


def call(server: ControlServer, method: str, path: str, body: bytes | str | dict | list | None = None,
         headers: dict[str, str] | None = None, token: bool = True) -> Reply:
    """One request to `server` over a fresh connection; `token` adds the Bearer header."""
    sent = {"Authorization": f"Bearer {server.token}"} if token else {}
    sent.update(headers or {})
    if isinstance(body, (dict, list)):
        body = json.dumps(body)
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
    try:
        conn.request(method, path, body=body, headers=sent)
        response = conn.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        conn.close()


def test_start_logs_one_line_with_the_url_and_a_fresh_token(state: ControlState,
                                                            caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="livemood.live.control")
    with ControlServer(state, port=0) as first, ControlServer(state, port=0) as second:
        assert first.token != second.token and len(first.token) >= 32
        assert first.url == f"http://127.0.0.1:{first.port}/?token={first.token}"
    lines = [r.getMessage() for r in caplog.records if r.name == "livemood.live.control"]
    assert lines == [f"control panel: {first.url}", f"control panel: {second.url}"]


def test_state_round_trip(server: ControlServer, state: ControlState) -> None:
    reply = call(server, "GET", "/api/state")
    assert reply.status == 200 and reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == {"emotion": "neutral", "intensity": 0.0, "bypass": False, "engine": None, "face": False,
                            "fps": 0.0, "latency_ms": {"p50": None, "p95": None},
                            **({"expressiveness": 1.0} if HAS_EXPRESSIVENESS else {})}

    reply = call(server, "POST", "/api/state", {"emotion": "sad", "intensity": 0.7, "bypass": True})
    assert reply.status == 200
    assert state.get() == dataclasses.replace(Controls(), emotion="sad", intensity=0.7, bypass=True)
    assert reply.json() == call(server, "GET", "/api/state").json()
    assert call(server, "POST", "/api/state", {"intensity": 1}).json()["intensity"] == 1.0  # an int is a number

    server.set_status(engine="neural (onnxruntime-cpu)", face=True, fps=29.97, latency_ms={"p50": 41.26, "p95": 57.0,
                                                                                             "max": 90.0})
    got = call(server, "GET", "/api/state").json()
    assert (got["engine"], got["face"], got["fps"], got["latency_ms"]) == (
        "neural (onnxruntime-cpu)", True, 30.0, {"p50": 41.3, "p95": 57.0})
    server.set_status(fps=12.0)  # the rest is kept
    assert call(server, "GET", "/api/state").json()["engine"] == "neural (onnxruntime-cpu)"


@pytest.mark.parametrize(("body", "status", "named"), [
    ({"emotion": "bored"}, 400, "emotion"),
    ({"emotion": 3}, 400, "emotion"),
    ({"intensity": 1.5}, 400, "intensity"),
    ({"intensity": -0.1}, 400, "intensity"),
    ({"intensity": "high"}, 400, "intensity"),
    ({"intensity": True}, 400, "intensity"),  # JSON true is no number, although Python's bool is an int
    ({"intensity": None}, 400, "intensity"),
    ('{"intensity": 1e999}', 400, "intensity"),  # Python reads it as infinity
    ({"bypass": 1}, 400, "bypass"),
    ({"bypass": "yes"}, 400, "bypass"),
    ({"emotion": "sad", "mood": "x", "volume": 3}, 400, '"mood", "volume"'),
    ([{"emotion": "sad"}], 400, "JSON object"),
    ('{"emotion": "sad"', 400, "not JSON"),
    ('{"intensity": NaN}', 400, "not JSON"),
    (b"\xff\xfe", 400, "not JSON"),
    ({"emotion": "sad", "pad": "x" * MAX_BODY_BYTES}, 413, str(MAX_BODY_BYTES)),
])
def test_invalid_changes_are_refused_and_named(server: ControlServer, state: ControlState, body: object,
                                               status: int, named: str) -> None:
    reply = call(server, "POST", "/api/state", body)
    assert reply.status == status, reply.body
    assert named in reply.json()["error"]
    assert state.get() == Controls()  # nothing applied, not even the valid part


def test_a_body_over_the_limit_is_refused_without_content_length(server: ControlServer, state: ControlState) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
    chunks = (b'{"emotion": "sad", "pad": "', b"x" * MAX_BODY_BYTES, b'"}')
    conn.request("POST", "/api/state", body=iter(chunks), encode_chunked=True,
                 headers={"Authorization": f"Bearer {server.token}", "Transfer-Encoding": "chunked"})
    response = conn.getresponse()
    assert response.status == 413 and str(MAX_BODY_BYTES) in json.loads(response.read())["error"]
    conn.close()
    assert state.get() == Controls()


@pytest.mark.skipif(not HAS_EXPRESSIVENESS, reason="Controls has no expressiveness field yet (another issue adds it)")
def test_expressiveness_is_read_and_written_once_controls_has_it(server: ControlServer, state: ControlState) -> None:
    assert call(server, "GET", "/api/state").json()["expressiveness"] == 1.0
    assert call(server, "POST", "/api/state", {"expressiveness": 1.5}).json()["expressiveness"] == 1.5
    assert state.get().expressiveness == 1.5
    reply = call(server, "POST", "/api/state", {"expressiveness": 2.5})
    assert reply.status == 400 and "expressiveness" in reply.json()["error"]


def test_keys_are_the_hotkeys_and_apply_like_them(server: ControlServer, state: ControlState) -> None:
    assert call(server, "GET", "/api/keys").json() == {
        "emotions": list(EMOTIONS), "emotion_keys": EMOTION_BY_KEY, "up": list(UP_KEYS), "down": list(DOWN_KEYS),
        "bypass": list(BYPASS_KEYS), "more": list(MORE_KEYS), "less": list(LESS_KEYS), "neutral": list(NEUTRAL_KEYS)}
    assert call(server, "POST", "/api/key", {"key": "3"}).json()["emotion"] == EMOTION_BY_KEY["3"]
    for _ in range(3):
        call(server, "POST", "/api/key", {"key": "+"})
    assert state.get().intensity == 0.3  # the hotkeys' steps of a tenth, exactly
    assert call(server, "POST", "/api/key", {"key": " "}).json()["bypass"] is True
    call(server, "POST", "/api/key", {"key": "]"})
    call(server, "POST", "/api/key", {"key": "n"})
    assert (state.get().expressiveness, state.get().neutral_takes) == (1.1, 1)
    for refused in ({"key": "q"}, {"key": "x"}, {"key": 3}, {"key": "1", "more": 1}, ["1"]):
        assert call(server, "POST", "/api/key", refused).status == 400  # quitting is not the page's to do
    assert state.get() == Controls(EMOTION_BY_KEY["3"], 0.3, True, expressiveness=1.1, neutral_takes=1)


def test_token_is_needed_by_header_query_or_cookie(server: ControlServer) -> None:
    port, token = server.port, server.token
    assert call(server, "GET", "/api/state", token=False).status == 401
    for wrong in ("", "x", token[:-1], token + "x", "é"):
        bearer = {"Authorization": f"Bearer {wrong}"}
        assert call(server, "GET", "/api/state", headers=bearer, token=False).status == 401
        assert call(server, "GET", f"/api/state?token={quote(wrong)}", token=False).status == 401
        cookie = {"Cookie": f"livemood_token_{port}={wrong}"}
        assert call(server, "GET", "/api/state", headers=cookie, token=False).status == 401
    assert call(server, "GET", "/api/state", headers={"Authorization": f"Basic {token}"}, token=False).status == 401
    assert call(server, "GET", "/api/preview.mjpg", token=False).status == 401
    assert call(server, "POST", "/api/state", {"emotion": "sad"}, token=False).status == 401

    assert call(server, "GET", f"/api/state?token={token}", token=False).status == 200
    page = call(server, "GET", "/", token=False)
    assert page.status == 401 and b"Open the link livemood printed" in page.body
    page = call(server, "GET", f"/?token={token}", token=False)
    assert page.status == 200 and b'<script src="/panel.js"' in page.body
    assert "frame-ancestors 'none'" in page.headers["Content-Security-Policy"]
    cookie = page.headers["Set-Cookie"]
    assert cookie.startswith(f"livemood_token_{port}={token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Path=/" in cookie
    with_cookie = {"Cookie": cookie.split(";")[0]}
    assert call(server, "GET", "/api/state", headers=with_cookie, token=False).status == 200
    assert call(server, "GET", "/", headers=with_cookie, token=False).status == 200  # a reload needs no token


def test_a_given_token_works_by_every_route_and_is_checked(state: ControlState) -> None:
    token = 'my;odd,"token"&=%/'
    with ControlServer(state, port=0, token=token) as server:
        assert server.url.endswith("/?token=my%3Bodd%2C%22token%22%26%3D%25%2F")  # a link that still works
        page = call(server, "GET", server.url.split(str(server.port), 1)[1], token=False)
        assert page.status == 200
        with_cookie = {"Cookie": page.headers["Set-Cookie"].split(";")[0]}
        assert call(server, "GET", "/api/state", headers=with_cookie, token=False).status == 200
        assert call(server, "GET", f"/api/state?token={quote(token)}", token=False).status == 200
        assert call(server, "GET", "/api/state").status == 200  # Bearer
    for bad in ("", "two words", "tab\t", "ünïcode"):
        with pytest.raises(UsageError, match="--control-token"):
            ControlServer(state, port=0, token=bad)


def test_other_origins_and_sites_are_refused(server: ControlServer, state: ControlState) -> None:
    port = server.port
    for origin in ("http://evil.example", f"http://evil.example:{port}", "null", f"https://127.0.0.1:{port}",
                   f"http://127.0.0.1:{port + 1}", "http://localhost"):
        for method, path, body in (("POST", "/api/state", {"emotion": "sad"}), ("GET", "/api/state", None),
                                   ("GET", "/api/preview.mjpg", None), ("GET", "/", None)):
            reply = call(server, method, path, body, headers={"Origin": origin})
            assert reply.status == 403, (origin, path)
            assert "refused" in reply.json()["error"]
    for own in (f"http://127.0.0.1:{port}", f"http://localhost:{port}"):
        assert call(server, "POST", "/api/state", {"intensity": 0.2}, headers={"Origin": own}).status == 200
    for site in ("cross-site", "same-site"):  # same-site: another port of localhost
        assert call(server, "GET", "/api/state", headers={"Sec-Fetch-Site": site}).status == 403
    assert call(server, "GET", "/api/state", headers={"Sec-Fetch-Site": "same-origin"}).status == 200
    assert state.get().emotion == "neutral"


def test_other_host_names_are_refused(server: ControlServer) -> None:
    port = server.port
    for host in (f"evil.example:{port}", "evil.example", f"127.0.0.1:{port + 1}", "127.0.0.1", f"10.0.0.1:{port}",
                 f"127.0.0.1.nip.io:{port}", ""):
        reply = call(server, "GET", "/api/state", headers={"Host": host})
        assert reply.status == 403 and "host" in reply.json()["error"], host
    for host in (f"127.0.0.1:{port}", f"localhost:{port}", f"LOCALHOST:{port}", f"[::1]:{port}"):
        assert call(server, "GET", "/api/state", headers={"Host": host}).status == 200, host


def test_only_the_panel_files_are_served_and_errors_tell_no_traceback(server: ControlServer) -> None:
    js = call(server, "GET", "/panel.js", token=False)
    css = call(server, "GET", "/panel.css", token=False)
    assert js.status == css.status == 200
    assert js.headers["Content-Type"].startswith("text/javascript") and b"/api/events" in js.body
    assert css.headers["Content-Type"].startswith("text/css")
    for path in ("/index.html", "/panel/panel.js", "/../pyproject.toml", "/%2e%2e/control.py", "/control.py",
                 "/api/nothing", "/api/state/x", "/favicon.ico", "/panel.js/"):
        reply = call(server, "GET", path)
        assert reply.status == 404, path
        assert reply.json() == {"error": "not found"}
    assert call(server, "DELETE", "/api/state").status == 405


class BrokenState(ControlState):
    """A state whose reading fails, as a bug elsewhere would make it."""

    def get(self) -> Controls:
        raise RuntimeError("secret detail of a bug")


def test_a_failure_is_a_json_500_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    with ControlServer(BrokenState(Controls()), port=0) as server:
        reply = call(server, "GET", "/api/state")
    assert reply.status == 500 and reply.json() == {"error": "internal error"}
    assert b"secret" not in reply.body and b"Traceback" not in reply.body
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(failures) == 1 and "GET /api/state failed" in failures[0].getMessage()


def test_a_taken_port_moves_to_the_next_free_one_or_is_a_usage_error(state: ControlState) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        with ControlServer(state, port=port) as server:
            assert server.port != port and server.port > port
            assert f":{server.port}/" in server.url
            assert call(server, "GET", "/api/state").status == 200
        with pytest.raises(UsageError, match=f"cannot listen on 127.0.0.1 port {port}"):
            ControlServer(state, port=port, find_free_port=False).start()


def test_a_host_that_cannot_be_bound_is_a_usage_error(state: ControlState) -> None:
    with pytest.raises(UsageError, match="control panel: cannot"):
        ControlServer(state, host="192.0.2.1", port=0).start()  # TEST-NET-1: no interface has it


def test_a_network_bind_warns_and_still_checks_the_host(state: ControlState, caplog: pytest.LogCaptureFixture) -> None:
    with ControlServer(state, host="0.0.0.0", port=0) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert call(server, "GET", "/api/state").status == 200
        assert call(server, "GET", "/api/state", headers={"Host": f"192.168.1.20:{server.port}"}).status == 200
        assert call(server, "GET", "/api/state", headers={"Host": f"evil.example:{server.port}"}).status == 403
    assert any(r.levelno == logging.WARNING and "reachable from the network" in r.getMessage()
               for r in caplog.records)


def test_close_is_safe_twice_and_final(state: ControlState) -> None:
    server = ControlServer(state, port=0)
    server.close()  # never started
    server = ControlServer(state, port=0)
    server.start()
    assert server.running and server.start() == server.url  # a second start changes nothing
    server.close()
    server.close()
    assert not server.running
    with pytest.raises(RuntimeError, match="after close"):
        server.start()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", server.port), timeout=WAIT_S).close()


# --- the WebSocket -------------------------------------------------------------------------------------------------

def events_url(server: ControlServer) -> str:
    return f"http://127.0.0.1:{server.port}/api/events"


def auth(server: ControlServer) -> dict[str, str]:
    return {"Authorization": f"Bearer {server.token}"}


def test_websocket_sends_the_state_when_a_hotkey_changes_it(state: ControlState) -> None:
    async def run(server: ControlServer) -> list[dict]:
        async with aiohttp.ClientSession() as session, session.ws_connect(events_url(server),
                                                                           headers=auth(server)) as ws:
            first = await ws.receive_json(timeout=WAIT_S)  # the state on connecting
            await asyncio.to_thread(apply_key, state, "3")  # as a hotkey would, from another thread
            second = await ws.receive_json(timeout=WAIT_S)
            await asyncio.to_thread(state.update, intensity=0.5)
            third = await ws.receive_json(timeout=WAIT_S)
            return [first, second, third]

    # Periodic events an hour apart: within the test, every event after the first is a change's.
    with ControlServer(state, port=0, event_every_s=3600.0) as server:
        first, second, third = asyncio.run(run(server))
    assert first["emotion"] == "neutral"
    assert second["emotion"] == EMOTION_BY_KEY["3"] and second["intensity"] == 0.0
    assert third["intensity"] == 0.5


def test_websocket_sends_the_state_once_a_second_without_changes(server: ControlServer) -> None:
    async def run() -> list[dict]:
        async with aiohttp.ClientSession() as session, session.ws_connect(events_url(server),
                                                                           headers=auth(server)) as ws:
            first = await ws.receive_json(timeout=WAIT_S)
            server.set_status(fps=29.5, face=True)  # a status change is not an event of its own
            return [first, await ws.receive_json(timeout=WAIT_S)]

    t0 = time.monotonic()
    first, second = asyncio.run(run())
    assert time.monotonic() - t0 >= 0.9  # it was the periodic event, not one sent at once
    assert (first["fps"], second["fps"], second["face"]) == (0.0, 29.5, True)


def test_close_ends_open_websockets(state: ControlState) -> None:
    server = ControlServer(state, port=0)
    server.start()

    async def run() -> aiohttp.WSMsgType:
        async with aiohttp.ClientSession() as session, session.ws_connect(events_url(server),
                                                                           headers=auth(server)) as ws:
            await ws.receive_json(timeout=WAIT_S)
            closing = asyncio.ensure_future(asyncio.to_thread(server.close))
            message = await ws.receive(timeout=WAIT_S)
            await closing
            return message.type

    assert asyncio.run(run()) in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    assert not server.running


def test_websocket_needs_the_token_and_its_own_origin(server: ControlServer) -> None:
    async def status(headers: dict[str, str], origin: str | None = None) -> int:
        async with aiohttp.ClientSession() as session:
            try:
                async with session.ws_connect(events_url(server), headers=headers, origin=origin) as ws:
                    await ws.receive_json(timeout=WAIT_S)
                    return 101
            except aiohttp.WSServerHandshakeError as e:
                return e.status

    async def run() -> list[int]:
        own = f"http://127.0.0.1:{server.port}"
        return [await status({}), await status(auth(server), "http://evil.example"),
                await status(auth(server), f"http://evil.example:{server.port}"), await status(auth(server), own)]

    assert asyncio.run(run()) == [401, 403, 403, 101]


# --- the MJPEG preview ---------------------------------------------------------------------------------------------

class Publisher(threading.Thread):
    """Publishes `frames` in turn at about `fps`, like the pipeline's output, until stopped."""

    def __init__(self, server: ControlServer, frames: list[np.ndarray], fps: float = 60.0) -> None:
        super().__init__(daemon=True)
        self.server, self.frames, self.period_s = server, frames, 1.0 / fps
        self.published = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.period_s):
            # A new array object each time (a view: no copy), as the pipeline's every output frame is.
            self.server.publish(self.frames[self.published % len(self.frames)].view())
            self.published += 1

    def __enter__(self) -> Publisher:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.join(WAIT_S)


class MjpegReader:
    """Reads the preview's multipart stream part by part, as a browser's <img> would."""

    def __init__(self, server: ControlServer) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=WAIT_S)
        self.conn.request("GET", "/api/preview.mjpg", headers=auth(server))
        self.response = self.conn.getresponse()
        content_type = self.response.headers["Content-Type"]
        assert self.response.status == 200 and content_type.startswith("multipart/x-mixed-replace; boundary=")
        self.boundary = b"--" + content_type.split("boundary=")[1].encode()

    def frame(self) -> np.ndarray:
        while self.response.readline().rstrip(b"\r\n") != self.boundary:
            pass
        length = None
        while line := self.response.readline().rstrip(b"\r\n"):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        assert length is not None
        image = cv2.imdecode(np.frombuffer(self.response.read(length), np.uint8), cv2.IMREAD_COLOR)
        assert image is not None
        return image

    def close(self) -> None:
        self.conn.close()


def gradient_frames(count: int, width: int = 1280, height: int = 720) -> list[np.ndarray]:
    """Distinct smooth 720p BGR frames (a moving gradient), cheap to encode."""
    x = np.linspace(0, 255, width, dtype=np.float32)[None, :, None]
    y = np.linspace(0, 255, height, dtype=np.float32)[:, None, None]
    return [np.broadcast_to(((x + y + 17 * i) % 256).astype(np.uint8), (height, width, 3)).copy()
            for i in range(count)]


def test_preview_streams_scaled_jpegs_at_most_15_fps(server: ControlServer) -> None:
    frames = gradient_frames(8)
    for frame in frames:
        server.publish(frame)
    time.sleep(0.2)
    assert server.preview.take_encode_times_s() == []  # nobody watches: nothing is encoded
    with Publisher(server, frames):
        reader = MjpegReader(server)
        try:
            got = [reader.frame()]
            t_first = time.monotonic()
            while (t_last := time.monotonic()) - t_first < 1.0:
                got.append(reader.frame())
        finally:
            reader.close()
    assert len(got) >= 2
    for image in got:
        assert image.shape == (360, PREVIEW_MAX_WIDTH, 3)  # 1280x720 scaled to 640 wide, aspect kept
    assert (len(got) - 1) / (t_last - t_first) <= PREVIEW_MAX_FPS * 1.15  # a little slack for delivery jitter


def test_a_viewer_that_never_reads_slows_neither_publish_nor_other_viewers(server: ControlServer) -> None:
    # Portrait noise: 640x1138 JPEGs of ~350 KB, so the stuck viewer's socket buffers fill within the second.
    rng = np.random.default_rng(0)
    frames = [rng.integers(0, 256, (1280, 720, 3), np.uint8) for _ in range(4)]
    stuck = socket.socket()
    stuck.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # before connecting, so the window stays small
    stuck.connect(("127.0.0.1", server.port))
    stuck.sendall(f"GET /api/preview.mjpg HTTP/1.1\r\nHost: 127.0.0.1:{server.port}\r\n"
                  f"Authorization: Bearer {server.token}\r\n\r\n".encode())
    try:
        t_start = time.monotonic()
        with Publisher(server, frames) as publisher:
            reader = MjpegReader(server)
            try:
                got = [reader.frame()]
                t0 = time.monotonic()
                while time.monotonic() - t0 < 1.0:
                    got.append(reader.frame())
                elapsed = time.monotonic() - t_start
                viewers = server.preview.viewers
            finally:
                reader.close()
        assert viewers == 2  # the stuck one was still connected throughout
        assert len(got) >= 2 and all(image.shape == (1138, 640, 3) for image in got)  # portrait: aspect kept
        assert publisher.published >= 30  # ~60 a second: the publisher never waited on the stuck viewer
        # One encode per frame for both viewers: two viewers encoding each their own would be twice this.
        assert len(server.preview.take_encode_times_s()) <= PREVIEW_MAX_FPS * elapsed + 2
        for i in range(500):  # a burst, as fast as the caller can: every call returns
            server.publish(frames[i % len(frames)].view())
        server.close()  # must end the stream stuck writing to a client that never reads
        assert not server.running
    finally:
        stuck.close()
