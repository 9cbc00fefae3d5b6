"""The control API's checks at the boundary: which `Controls` fields it takes and of what type, JSON bodies, and
whether a Host header names this server.

Fields come from `dataclasses.fields(Controls)`, so a field added there (e.g. expressiveness) is read and written
by the API, and shown by the panel, without a change here. The values themselves are checked by `Controls`.
"""

from __future__ import annotations

import dataclasses
import functools
import ipaddress
import json
import logging
import math
import typing

from aiohttp import web

from livemood.config import Controls, UsageError

log = logging.getLogger(__name__)

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


@functools.cache
def state_fields() -> dict[str, type]:
    """The `Controls` fields the API reads and writes, in declaration order, with their types."""
    hints = typing.get_type_hints(Controls)  # resolves the string annotations of `from __future__ import annotations`
    kinds: dict[str, type] = {}
    for field in dataclasses.fields(Controls):
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
