"""Files that appear whole or not at all: written under a hidden, unique name in their own folder, then renamed.

The rename is atomic because the temporary file is in the target's folder (the same file system), so a reader, a
crash, a signal or a full disk never sees a half-written file at the target's path, and a file already there stays
untouched until the new one is complete. Each writer reserves its own temporary name, so two runs writing the same
output at once do not write into one file.
"""

from __future__ import annotations

import contextlib
import errno
import os
import secrets
from pathlib import Path
from types import TracebackType

from livemood.config import RunError

TEMP_MARK = ".partial"  # in every temporary name: `.NAME.<random>.partial.SUFFIX`
_NAME_ATTEMPTS = 100  # random names tried before giving up (a clash is already a 1 in 2^32 event)


class AtomicFile:
    """A temporary file `tmp` that `commit` renames to `path`, or `discard` deletes.

    The temporary name keeps `path`'s suffix (writers such as FFmpeg pick the format from it). Use as a context
    manager: leaving the block normally commits, an exception (an interrupt too) discards.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = _reserve(path)

    def commit(self) -> None:
        """Flush the temporary file to the disk and rename it over `path`; on failure it is discarded."""
        try:
            # The data reaches the disk before the rename: a delayed ENOSPC shows here, not as a truncated file
            # after a crash.
            fd = os.open(self.tmp, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(self.tmp, self.path)
        except BaseException:
            self.discard()
            raise

    def discard(self) -> None:
        """Delete the temporary file (safe to call twice, and after `commit`)."""
        with contextlib.suppress(OSError):  # nothing more can be done: the folder itself refuses changes
            self.tmp.unlink(missing_ok=True)

    def __enter__(self) -> Path:
        return self.tmp

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        if kind is None:
            self.commit()
        else:
            self.discard()


def _reserve(path: Path) -> Path:
    """Create an empty, unique temporary file next to `path` (with the user's usual permissions)."""
    for _ in range(_NAME_ATTEMPTS):
        tmp = path.with_name(f".{path.stem}.{secrets.token_hex(4)}{TEMP_MARK}{path.suffix}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(errno.EEXIST, f"no free temporary name next to {path}")


def cannot_write(path: Path, error: OSError) -> RunError:
    """The one line for a write that failed: `cannot write out.mp4: No space left on device`."""
    reason = os.strerror(error.errno) if error.errno else str(error)
    return RunError(f"cannot write {path}: {reason}")
