"""livemood: live emotion filter for video calls.

`livemood.edit(source, output, keyframes=...)` renders a recorded video from Python (see `livemood.editing`); it is
imported on first use, so `import livemood` stays light.
"""

from __future__ import annotations

__all__ = ["EditResult", "edit"]


def __getattr__(name: str) -> object:
    if name in __all__:
        from livemood import editing

        return getattr(editing, name)
    raise AttributeError(f"module 'livemood' has no attribute {name!r}")
