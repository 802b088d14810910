"""Errors reported the way runc reports its own.

Engines read errors only from the `--log` file: containerd's shim stream-decodes it and keeps the
last JSON object whose level is "error"; one text line in a JSON log breaks that decode. On
`create` the shim's stderr is the container's stderr, so it gets exactly what runc would print
there: the bare message. Only warnings and errors are ever written (info lines on every call have
filled /run on real hosts).
"""

from __future__ import annotations

import os
import sys
import time

from ..argv import RuncArgs


def _timestamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _go_quote(text: str) -> str:
    """Quote like logrus' text formatter: bare when safe, else a Go string literal."""
    if text and all(c.isalnum() or c in "-._/@^+" for c in text):
        return text
    out = ['"']
    for c in text:
        if c in '"\\':
            out.append("\\" + c)
        elif c == "\n":
            out.append("\\n")
        elif c == "\t":
            out.append("\\t")
        elif c == "\r":
            out.append("\\r")
        elif ord(c) < 0x20 or ord(c) == 0x7F:
            out.append(f"\\x{ord(c):02x}")
        else:
            out.append(c)
    out.append('"')
    return "".join(out)


def format_line(level: str, msg: str, log_format: str) -> str:
    """One log line, byte-compatible in shape with runc's logrus output."""
    if log_format == "json":
        import json

        return json.dumps({"level": level, "msg": msg, "time": _timestamp()}) + "\n"
    return f"time={_go_quote(_timestamp())} level={level} msg={_go_quote(msg)}\n"


def _append(path: str, line: str) -> bool:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o644)
    except OSError:
        return False
    try:
        os.write(fd, line.encode("utf-8", "replace"))
    finally:
        os.close(fd)
    return True


def _stderr(text: str) -> None:
    try:
        os.write(2, text.encode("utf-8", "replace"))
    except OSError:
        pass


# What one message may take, whatever it repeats: a pipe holds 64 KiB, and nobody may be reading
# our stderr until we exit (containerd's shim drains it afterwards). A message plus its log line
# on stderr stays far below that.
MAX_MESSAGE = 8192


def _bounded(msg: str) -> str:
    if len(msg) <= MAX_MESSAGE:
        return msg
    return f"{msg[:MAX_MESSAGE]}… ({len(msg) - MAX_MESSAGE} more characters)"


def log(args: RuncArgs, level: str, msg: str) -> None:
    """A warning or error line, to `--log` if given, else to stderr (as runc does)."""
    line = format_line(level, _bounded(msg), args.log_format)
    if not (args.log_path and _append(args.log_path, line)):
        _stderr(line)


def log_only(args: RuncArgs, level: str, msg: str) -> None:
    """A line in `--log` if there is one, else nothing: for calls whose stdout and stderr the
    engine parses (containerd reads `state` with both combined)."""
    if args.log_path:
        _append(args.log_path, format_line(level, _bounded(msg), args.log_format))


def fail(args: RuncArgs, msg: str, status: int = 1) -> None:
    """Report `msg` as runc reports a fatal error, then exit with `status`."""
    log(args, "error", msg)
    _stderr(_bounded(msg) + "\n")
    sys.stdout.flush()
    os._exit(status)
