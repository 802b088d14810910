"""The exceptions that carry a user-facing message to one of the edges, and how values are
written in such messages (clipped, durations)."""

from __future__ import annotations


class RetinueError(Exception):
    """An error whose message is complete and meant for the user as it is."""


class ConfigError(RetinueError):
    """The administrator's configuration is wrong; the message names file, key path and value."""


class SpecError(RetinueError):
    """The bundle's config.json cannot be used; the message names the field."""


class LowerRuntimeError(RetinueError):
    """No usable lower runtime (runc or crun) could be found or executed."""


# Values a container's owner controls (env, annotations, spec fields) can be megabytes long. An
# error that repeats one whole fills the stderr pipe, which containerd's shim drains only after
# the runtime exits: the runtime blocks for ever. Every echo of such a value is clipped.
CLIP_CHARS = 200


def clip(text: str, limit: int = CLIP_CHARS) -> str:
    """`text`, or its first `limit` characters and an ellipsis with the total length."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}… ({len(text)} characters)"


def seconds(value: float) -> str:
    """A duration as messages write it: 1.5s, 100ms (a config reads both back)."""
    return f"{value:g}s" if value >= 1 or value == 0 else f"{value * 1000:g}ms"
