"""Compiled artefacts (exported ONNX models, TensorRT plans) cached on disk, keyed and checked.

Each artefact is two files in the cache folder: `NAME.SUFFIX` (the bytes) and `NAME.SUFFIX.json` (its key: what it
was built from and for, e.g. the ONNX hash, TensorRT version and GPU, plus the artefact's own sha256). An artefact is
used only if its key equals the current one and its bytes still hash to the recorded value; otherwise the caller is
told why and rebuilds it. Files are written under a temporary name and renamed (`livemood.atomic`), so a crash
never leaves a half-written artefact behind a valid key, and two runs storing at once do not share a file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
from pathlib import Path

from livemood.atomic import AtomicFile

log = logging.getLogger(__name__)

ARTEFACT_DIR_VARIABLE = "LIVEMOOD_ENGINE_DIR"  # a folder that overrides the user's cache folder
_CHUNK = 1 << 20  # bytes read at a time when hashing


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def user_cache_folder() -> Path:
    """Where artefacts go by default: `$LIVEMOOD_ENGINE_DIR` if set, else livemood's folder in the user's cache
    (`$XDG_CACHE_HOME/livemood`, `~/.cache/livemood` without it; `~/Library/Caches/livemood` on macOS;
    `%LOCALAPPDATA%\\livemood\\Cache` on Windows). Never inside the installed package, which may be read-only and
    is replaced on upgrade."""
    if override := os.environ.get(ARTEFACT_DIR_VARIABLE):
        return Path(override)
    if sys.platform == "win32":
        base = os.environ.get("LOCALAPPDATA") or str(Path.home() / "AppData" / "Local")
        return Path(base) / "livemood" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "livemood"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "livemood"


class ArtefactCache:
    """A folder of keyed artefacts (default: `user_cache_folder()`); see the module docstring."""

    def __init__(self, folder: Path | None = None) -> None:
        self.folder = folder or user_cache_folder()

    def path(self, name: str) -> Path:
        return self.folder / name

    def lookup(self, name: str, key: dict[str, str]) -> Path | None:
        """The artefact's path if it exists, was built for `key` and is intact; None (and the reason logged) if
        it must be built."""
        path, meta = self.path(name), self._meta_path(name)
        if not path.exists() or not meta.exists():
            return None
        try:
            recorded = json.loads(meta.read_text())
        except (OSError, ValueError) as e:
            log.warning("%s: unreadable key file (%s); rebuilding", meta, e)
            return None
        changed = [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in key.items() if recorded.get(k) != v]
        if changed:
            log.warning("%s was built for another set-up (%s); rebuilding", path.name, "; ".join(changed))
            return None
        if file_sha256(path) != recorded.get("sha256"):
            log.warning("%s is corrupt (its sha256 differs from the one recorded when it was built); rebuilding",
                        path)
            return None
        return path

    def store(self, name: str, key: dict[str, str], data: bytes | Path) -> Path:
        """Save an artefact (bytes, or a file to move in) with its key; returns its path."""
        self.folder.mkdir(parents=True, exist_ok=True)
        path, meta = self.path(name), self._meta_path(name)
        with AtomicFile(path) as tmp:
            if isinstance(data, Path):
                os.replace(data, tmp)
            else:
                tmp.write_bytes(data)
            record = {**key, "sha256": file_sha256(tmp)}
            meta.unlink(missing_ok=True)  # no moment where the old key describes the new bytes
        with AtomicFile(meta) as meta_tmp:
            meta_tmp.write_text(json.dumps(record, indent=1) + "\n")
        return path

    def _meta_path(self, name: str) -> Path:
        return self.path(name + ".json")
