"""The control API's checks at the boundary: which `Controls` fields it takes and of what type, JSON bodies, and
who may talk to the server at all (Host, Origin, Sec-Fetch-Site, the token).

Fields come from `dataclasses.fields(Controls)`, so a field added there (e.g. expressiveness) is read and written
by the API, and shown by the panel, without a change here. The values themselves are checked by `Controls`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import ipaddress
import json
import logging
import math
import typing
from dataclasses import dataclass

from aiohttp import hdrs, web

from livemood.config import Controls, UsageError

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"  # the control panel listens on loopback unless told otherwise
MAX_BODY_BYTES = 4096  # a request body over this is refused with 413 (a full state is ~100 bytes)
SHOWN_CHARS = 40  # of a refused value, quoted in the error
FIELD_KINDS = (str, float, bool, int)  # the field types the API can check; other fields are left out of it


class ApiError(Exception):
    """A request the API refuses: answered with `status` and {"error": message}."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response({"error": message}, status=status, headers=headers)


@web.middleware
async def json_errors(request: web.Request, handler: web.Handler) -> web.StreamResponse:
    """Every error is a short JSON body (or the page's own); a failure logs once and never shows a traceback."""
    try:
        return await handler(request)
    except ApiError as e:
        return error_response(e.status, str(e))
    except web.HTTPException as e:  # aiohttp's own: 404, 405, ...
        if e.status < 400:
            raise
        return error_response(e.status, e.reason.lower())
    except (asyncio.CancelledError, ConnectionError):
        raise
    except Exception:
        log.exception("control panel: %s %s failed", request.method, request.path)
        return error_response(500, "internal error")


# Controls fields the panel does not show: the timelines' ramp time and the neutral-face counter (the n key).
NOT_LIVE = frozenset({"ramp_s", "neutral_takes"})


@functools.cache
def state_fields() -> dict[str, type]:
    """The `Controls` fields the API reads and writes, in declaration order, with their types."""
    hints = typing.get_type_hints(Controls)  # resolves the string annotations of `from __future__ import annotations`
    kinds: dict[str, type] = {}
    for field in dataclasses.fields(Controls):
        if field.name in NOT_LIVE:
            continue
        kind = hints.get(field.name)
        if kind in FIELD_KINDS:
            kinds[field.name] = kind
        else:
            log.debug("control API: Controls.%s has type %s, which the API cannot check: left out", field.name, kind)
    return kinds


def _shown(value: object) -> str:
    text = json.dumps(value)
    return text if len(text) <= SHOWN_CHARS else text[: SHOWN_CHARS - 1] + "…"


def _check_kind(name: str, kind: type, value: object) -> object:
    """`value` as field `name` of type `kind` takes it; JSON's numbers serve floats, but true/false never do."""
    if kind is bool:
        if isinstance(value, bool):
            return value
        raise UsageError(f"{name} must be true or false, got {_shown(value)}")
    if kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value):
            return float(value)
        raise UsageError(f"{name} must be a number, got {_shown(value)}")
    if kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise UsageError(f"{name} must be a whole number, got {_shown(value)}")
    if isinstance(value, str):
        return value
    raise UsageError(f"{name} must be a string, got {_shown(value)}")


def check_changes(body: object, current: Controls) -> dict[str, object]:
    """The changes a POST /api/state body asks for, each checked on its own so an error names its field.

    Raises UsageError for a body that is not an object, unknown fields, a value of the wrong type or one that
    `Controls` refuses (then the message is Controls' own, prefixed by the field's name if it lacks it).
    """
    if not isinstance(body, dict):
        raise UsageError('the body must be a JSON object of fields, e.g. {"emotion": "sad"}')
    kinds = state_fields()
    unknown = [_shown(name) for name in body if name not in kinds]
    if unknown:
        raise UsageError(f"unknown field{'s' if len(unknown) > 1 else ''} {', '.join(unknown)}; "
                         f"the fields are: {', '.join(kinds)}")
    changes = {name: _check_kind(name, kinds[name], value) for name, value in body.items()}
    for name, value in changes.items():
        try:
            dataclasses.replace(current, **{name: value})
        except UsageError as e:
            message = str(e)
            raise UsageError(message if name in message else f"{name}: {message}") from e
    return changes


async def read_json(request: web.Request) -> object:
    """The request's JSON body; ApiError 413 when it is over MAX_BODY_BYTES, 400 when it is not JSON."""
    if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
        raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes")
    try:
        body = await request.read()  # the app's client_max_size stops a chunked body at the same size
    except web.HTTPRequestEntityTooLarge:
        raise ApiError(413, f"the body is over {MAX_BODY_BYTES} bytes") from None
    try:
        return json.loads(body, parse_constant=_refuse_constant)
    except ValueError:  # UnicodeDecodeError and JSONDecodeError both
        raise ApiError(400, "the body is not JSON") from None


def _refuse_constant(name: str) -> object:
    raise ValueError(f"{name} is not a number JSON knows")  # NaN, Infinity: Python reads them, JSON does not


def parse_control_address(text: str) -> tuple[str, int]:
    """`PORT`, `HOST:PORT` or `[IPV6]:PORT` (the CLI's `--control`) as (host, port); UsageError for other text."""
    usage = f"--control takes [HOST:]PORT, e.g. 8765 or 0.0.0.0:8765; got {text!r}"
    try:
        host, port_text = (DEFAULT_HOST, text) if text.isdigit() else split_host_port(text)
    except ValueError:
        raise UsageError(usage) from None
    if not host or not port_text.isdigit() or any(c.isspace() or c in "/?#@" for c in host):
        raise UsageError(usage)
    port = int(port_text)
    if port > 65535:
        raise UsageError(f"--control port must be 0..65535 (0 = any free port); got {port}")
    return host, port


def split_host_port(text: str) -> tuple[str, str]:
    """`HOST:PORT`, `[IPV6]:PORT` or `HOST` as (host, port text), the port '' when absent; ValueError if malformed."""
    if text.startswith("["):
        end = text.find("]")
        rest = text[end + 1:]
        if end < 0 or (rest and not rest.startswith(":")):
            raise ValueError(f"malformed address {text!r}")
        return text[1:end], rest[1:]
    if text.count(":") > 1:
        raise ValueError(f"an IPv6 address goes in brackets: {text!r}")
    host, _, port = text.partition(":")
    return host, port


def is_loopback(address: str) -> bool:
    """Whether an IP address (as a socket reports it, an IPv6 one perhaps with %scope) is a loopback one."""
    return ipaddress.ip_address(address.split("%")[0]).is_loopback


def _is_wildcard(address: str) -> bool:
    return ipaddress.ip_address(address.split("%")[0]).is_unspecified


def host_port_allowed(text: str, host: str, address: str, port: int, loopback: bool) -> bool:
    """Whether a Host header (or an Origin's `host:port`) names this server, listening on `address`:`port`.

    Accepted: the host it was started with, its address, `localhost`, other loopback addresses for a loopback
    server, and any IP address for a wildcard one. Any other name is refused even if it resolves here: that is how
    DNS rebinding lets a web page reach a local server as if it were its own.
    """
    try:
        name, port_text = split_host_port(text.strip())
    except ValueError:
        return False
    if port_text == "":
        port_text = "80"  # browsers leave out the default port
    if not port_text.isdigit() or int(port_text) != port:
        return False
    name = name.lower()
    if name in (host.lower(), address.lower(), "localhost"):
        return True
    try:
        ip = ipaddress.ip_address(name)
    except ValueError:
        return False
    return ip.is_loopback if loopback else _is_wildcard(address)


@dataclass(frozen=True)
class RequestGuard:
    """Who may talk to one running server: requests naming it in their Host header, from its own origin if they
    say where they come from, and (for /api/) carrying the token. `refusal` answers everyone else."""

    token: str
    host: str  # as asked, e.g. "localhost" or "0.0.0.0"
    address: str  # as bound, e.g. "127.0.0.1"
    port: int
    loopback: bool

    @property
    def cookie(self) -> str:
        # Cookies ignore ports: named by port, two livemood runs on one machine keep their own.
        return f"livemood_token_{self.port}"

    def authorised(self, request: web.Request) -> bool:
        """Whether the request carries the token: Bearer header, `token` query parameter or the cookie."""
        scheme, _, bearer = request.headers.get(hdrs.AUTHORIZATION, "").partition(" ")
        presented = (bearer.strip() if scheme.lower() == "bearer" else "", request.query.get("token", ""),
                     request.cookies.get(self.cookie, ""))
        expected = self.token.encode()
        # surrogateescape: a header's stray non-UTF-8 bytes are compared (and fail), never an error.
        return any(hmac.compare_digest(token.encode("utf-8", "surrogateescape"), expected)
                   for token in presented if token)

    def refusal(self, request: web.Request) -> web.Response | None:
        """The 403 or 401 answer for a request that may not go on, or None."""
        host = request.headers.get(hdrs.HOST, "")
        if not self._names_us(host):
            return error_response(403, f"host {host!r} is not this control panel (DNS rebinding?)")
        origin = request.headers.get(hdrs.ORIGIN)
        if origin is not None and not self._own_origin(origin, host):
            return error_response(403, f"requests from {origin!r} are refused (cross-origin)")
        # Browsers say when a request comes from another site; another port of localhost is the "same site".
        # The page itself may be opened from a link anywhere: without the token it shows nothing.
        if request.path != "/" and request.headers.get("Sec-Fetch-Site") in ("cross-site", "same-site"):
            return error_response(403, "requests from other sites are refused")
        if request.path.startswith("/api/") and not self.authorised(request):
            return error_response(401, "a valid token is needed: open the link livemood printed",
                                  {hdrs.WWW_AUTHENTICATE: "Bearer"})
        return None

    def _names_us(self, text: str) -> bool:
        return host_port_allowed(text, self.host, self.address, self.port, self.loopback)

    def _own_origin(self, origin: str, host: str) -> bool:
        if origin.lower() == f"http://{host.lower()}":  # the page in the browser tab that sent this is ours
            return True
        scheme, _, netloc = origin.partition("://")
        return self.loopback and scheme.lower() == "http" and self._names_us(netloc)
