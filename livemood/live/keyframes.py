"""Keyframes: emotions on a timeline for recorded video, read from a CSV or JSON file or a Python list.

CSV: a header naming the columns, then one row a change::

    time,emotion,intensity,expressiveness,ramp
    0,neutral,0
    00:02.000,happy,0.8
    4,sad,0.8,,1.5

`time` is seconds from the video's first frame (`2.5`) or a clock time `[HH:]MM:SS[.mmm]`; `emotion` one of
`EMOTIONS`; `intensity` 0–1. Optional columns: `expressiveness` 0–2 (empty or absent: the previous keyframe's, at
first the run's own), `ramp`, the most seconds the change takes (empty or absent: `RAMP_TIME_S`; 0 cuts). Blank
lines and lines starting with `#` are skipped. JSON is a list of objects with the same keys, as numbers or as the
same text. Any problem is refused at start, before anything is opened, as one line naming the file and the line
(CSV) or the entry's index (JSON, from 0).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from livemood.config import RAMP_TIME_S, Controls, Keyframe, Schedule, UsageError

COLUMNS = ("time", "emotion", "intensity", "expressiveness", "ramp")
REQUIRED = COLUMNS[:3]
COMMENT = "#"
TIME_SYNTAX = "seconds (2.5) or [HH:]MM:SS[.mmm] (00:02.500)"
_SECONDS = re.compile(r"\d+(?:\.\d*)?|\.\d+")
_CLOCK = re.compile(r"(?:(\d+):)?(\d{1,2}):(\d{1,2}(?:\.\d*)?)")  # [hours:]minutes:seconds[.fraction]

Entry = Mapping[str, object] | Sequence[object]  # one keyframe given from Python: a dict, or a tuple in COLUMNS order
KeyframeInput = Path | str | Sequence[Entry]  # a file, or the keyframes themselves


def parse_time(text: str) -> float:
    """Seconds from `2.5`, `02:03.250` (MM:SS.mmm) or `1:02:03.250` (HH:MM:SS.mmm); UsageError otherwise."""
    text = text.strip()
    if _SECONDS.fullmatch(text):
        return float(text)
    clock = _CLOCK.fullmatch(text)
    if clock is None or int(clock[2]) >= 60 or float(clock[3]) >= 60:
        raise UsageError(f"time {text!r} is not {TIME_SYNTAX}")
    return int(clock[1] or 0) * 3600.0 + int(clock[2]) * 60.0 + float(clock[3])


def load_keyframes(path: Path, base: Controls) -> Schedule:
    """The schedule in a `.csv` or `.json` keyframe file (see the module docstring).

    `base` holds the controls before the first keyframe and the expressiveness of keyframes that give none.
    """
    suffix = path.suffix.lower()
    if suffix not in (".csv", ".json"):
        raise UsageError(f"a keyframes file is .csv or .json: {path}")
    try:
        text = path.read_text(encoding="utf-8-sig")  # spreadsheets often start a CSV with a byte-order mark
    except FileNotFoundError:
        raise UsageError(f"keyframes file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as e:
        raise UsageError(f"cannot read keyframes file {path}: {e}") from None
    entries = _csv_entries(path, text) if suffix == ".csv" else _json_entries(path, text)
    return _schedule(entries, base, f"keyframes from {path.name}")


def schedule_from(keyframes: KeyframeInput, base: Controls) -> Schedule:
    """A schedule from a keyframe file's path, or from a list of keyframes: tuples `(time, emotion, intensity[,
    expressiveness[, ramp]])` or dicts with those keys, values as in the files (times also as text)."""
    if isinstance(keyframes, str | Path):
        return load_keyframes(Path(keyframes), base)
    return _schedule(_list_entries(keyframes), base, "the keyframes list")


def _schedule(entries: Iterable[tuple[str, Mapping[str, object]]], base: Controls, origin: str) -> Schedule:
    """Keyframes from (where, fields) pairs, each checked against the one before; errors are prefixed `where`."""
    keyframes: list[Keyframe] = []
    for where, fields in entries:
        previous = keyframes[-1] if keyframes else None
        try:
            keyframe = _keyframe(fields, base if previous is None else previous.controls)
            keyframe.check_after(previous)
        except UsageError as e:
            raise UsageError(f"{where}: {e}") from None
        keyframes.append(keyframe)
    return Schedule(tuple(keyframes), origin, base)


def _keyframe(fields: Mapping[str, object], previous: Controls) -> Keyframe:
    """One keyframe; `previous` gives the expressiveness when the entry has none (Controls checks the ranges)."""
    unknown = [key for key in fields if key not in COLUMNS]
    if unknown:
        raise UsageError(f"unknown key {unknown[0]!r}; keyframes have {', '.join(COLUMNS)}")
    missing = [key for key in REQUIRED if _blank(fields.get(key))]
    if missing:
        raise UsageError(f"no {missing[0]} given; a keyframe needs {', '.join(REQUIRED)}")
    emotion = fields["emotion"]
    if not isinstance(emotion, str):
        raise UsageError(f"emotion {emotion!r} is not a name")
    changes: dict[str, object] = {
        "emotion": emotion.strip().lower(),
        "intensity": _number(fields["intensity"], "intensity"),
        "ramp_s": RAMP_TIME_S if _blank(fields.get("ramp")) else _number(fields["ramp"], "ramp"),
    }
    if not _blank(fields.get("expressiveness")):
        changes["expressiveness"] = _number(fields["expressiveness"], "expressiveness")
    time = fields["time"]
    time_s = parse_time(time) if isinstance(time, str) else _number(time, "time")
    return Keyframe(time_s, dataclasses.replace(previous, **changes))


def _blank(value: object) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number(value: object, name: str) -> float:
    if isinstance(value, int | float | str) and not isinstance(value, bool):
        try:
            number = float(value)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    raise UsageError(f"{name} {value!r} is not a number")


def _csv_entries(path: Path, text: str) -> Iterator[tuple[str, dict[str, str]]]:
    reader = csv.reader(io.StringIO(text))
    header: list[str] | None = None
    for cells in reader:
        cells = [cell.strip() for cell in cells]
        if not any(cells) or cells[0].startswith(COMMENT):
            continue
        where = f"{path} line {reader.line_num}"  # csv counts physical lines, so quoted line breaks stay right
        if header is None:
            header = [cell.lower() for cell in cells]
            _check_header(header, where)
        elif len(cells) > len(header):
            raise UsageError(f"{where}: {len(cells)} cells, but the header names {len(header)} columns")
        else:
            yield where, dict(zip(header, cells, strict=False))  # absent trailing cells are optional columns


def _check_header(header: list[str], where: str) -> None:
    wanted = f"the header names columns {','.join(REQUIRED)}[,{'][,'.join(COLUMNS[3:])}]"
    for i, name in enumerate(header):
        if name not in COLUMNS:
            raise UsageError(f"{where}: unknown column {name!r}; {wanted}")
        if name in header[:i]:
            raise UsageError(f"{where}: column {name!r} appears twice")
    missing = [name for name in REQUIRED if name not in header]
    if missing:
        raise UsageError(f"{where}: no {missing[0]!r} column; {wanted}")


def _json_entries(path: Path, text: str) -> Iterator[tuple[str, Mapping[str, object]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise UsageError(f"{path} line {e.lineno}: not valid JSON ({e.msg})") from None
    if not isinstance(data, list):
        raise UsageError(f"{path}: expected a list of keyframes, [{{\"time\": 0, \"emotion\": \"happy\", "
                         f"\"intensity\": 0.5}}, ...], not a JSON {type(data).__name__}")
    for i, entry in enumerate(data):
        where = f"{path} entry [{i}]"
        if not isinstance(entry, dict):
            raise UsageError(f"{where}: a keyframe is an object with keys {', '.join(COLUMNS)}")
        yield where, entry


def _list_entries(entries: Sequence[Entry]) -> Iterator[tuple[str, Mapping[str, object]]]:
    for i, entry in enumerate(entries):
        where = f"keyframes[{i}]"
        tuple_like = isinstance(entry, Sequence) and not isinstance(entry, str)
        if isinstance(entry, Mapping):
            yield where, entry
        elif tuple_like and len(REQUIRED) <= len(entry) <= len(COLUMNS):
            yield where, dict(zip(COLUMNS, entry, strict=False))
        else:
            raise UsageError(f"{where}: expected ({', '.join(REQUIRED)}[, {'[, '.join(COLUMNS[3:])}]]) or a dict "
                             f"with those keys, got {entry!r}")
