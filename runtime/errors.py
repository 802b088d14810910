"""The exceptions that carry a user-facing message to one of the edges."""

from __future__ import annotations


class RetinueError(Exception):
    """An error whose message is complete and meant for the user as it is."""


class ConfigError(RetinueError):
    """The administrator's configuration is wrong; the message names file, key path and value."""


class SpecError(RetinueError):
    """The bundle's config.json cannot be used; the message names the field."""


class LowerRuntimeError(RetinueError):
    """No usable lower runtime (runc or crun) could be found or executed."""
