"""Reading and writing a bundle's config.json.

The spec stays a plain dict: every field the shim does not own keeps its key, value, nulls and
order (typed round trips that dropped newer fields broke real containers). Writes are atomic: a
temp file in the same directory, the original mode and owner, then rename.
"""

from __future__ import annotations

import _json
import os

from .errors import SpecError, clip

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

HOOK_STAGES = (
    "prestart",
    "createRuntime",
    "createContainer",
    "startContainer",
    "poststart",
    "poststop",
)


def config_path(bundle: str) -> str:
    return os.path.join(bundle, "config.json")


def read(bundle: str) -> tuple[str, bytes]:
    """The path of config.json and its bytes; errors name the bundle and what is wrong."""
    if not os.path.isdir(bundle):
        what = "not a directory" if os.path.exists(bundle) else "no such directory"
        raise SpecError(f"bundle {bundle}: {what}")
    path = config_path(bundle)
    try:
        with open(path, "rb") as f:
            return path, f.read()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None


def _kind(value: object) -> str:
    if value is None:
        return "null"
    return {
        str: "a string",
        bool: "a boolean",
        int: "a number",
        float: "a number",
        list: "a list",
        dict: "an object",
    }.get(type(value), type(value).__name__)


def _got(value: object) -> str:
    import json

    text = json.dumps(value)
    if len(text) > 60:
        text = text[:57] + "..."
    return _kind(value) if value is None else f"{_kind(value)}: {text}"


def _expect(errors: list[str], path: str, value: object, kind: type, what: str) -> bool:
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return True
    errors.append(f"{path}: expected {what}, got {_got(value)}")
    return False


def _strings(errors: list[str], path: str, value: object) -> None:
    if _expect(errors, path, value, list, "a list of strings"):
        assert isinstance(value, list)
        for i, item in enumerate(value):
            _expect(errors, f"{path}[{i}]", item, str, "a string")


def validate(spec: object) -> list[str]:
    """Problems with the fields the shim reads or edits, each naming its JSON path."""
    errors: list[str] = []
    if not _expect(errors, "(top level)", spec, dict, "an object"):
        return errors
    assert isinstance(spec, dict)
    if "process" not in spec:
        errors.append("process: missing (required by runc to create a container)")
    elif _expect(errors, "process", spec["process"], dict, "an object"):
        process = spec["process"]
        if "env" in process and process["env"] is not None:
            _strings(errors, "process.env", process["env"])
        if "args" in process and process["args"] is not None:
            _strings(errors, "process.args", process["args"])
    annotations = spec.get("annotations")
    if annotations is not None and _expect(
        errors, "annotations", annotations, dict, "an object of strings"
    ):
        for key, value in annotations.items():
            _expect(errors, f"annotations.{clip(key)}", value, str, "a string")
    mounts = spec.get("mounts")
    if mounts is not None and _expect(errors, "mounts", mounts, list, "a list of objects"):
        for i, mount in enumerate(mounts):
            if _expect(errors, f"mounts[{i}]", mount, dict, "an object"):
                dest = mount.get("destination")
                _expect(errors, f"mounts[{i}].destination", dest, str, "a string")
    hooks = spec.get("hooks")
    if hooks is not None and _expect(errors, "hooks", hooks, dict, "an object"):
        for stage in HOOK_STAGES:
            entries = hooks.get(stage)
            if entries is None:
                continue
            if _expect(errors, f"hooks.{stage}", entries, list, "a list of hooks"):
                for i, hook in enumerate(entries):
                    if _expect(errors, f"hooks.{stage}[{i}]", hook, dict, "an object"):
                        _expect(
                            errors, f"hooks.{stage}[{i}].path", hook.get("path"), str, "a string"
                        )
    return errors


# `import json` costs ~9 ms (it pulls in re and enum), more than everything else on the create
# path. json.loads and json.dumps use these C functions of _json; called directly they give the
# same objects and the same text. Anything unusual (another encoding, an error) goes to the json
# module itself, so its results and messages stay exactly json's.
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


class _ScannerContext:
    strict = True
    object_hook = None
    object_pairs_hook = None
    parse_float = float
    parse_int = int
    parse_constant = _CONSTANTS.__getitem__


_scan = _json.make_scanner(_ScannerContext())  # type: ignore[arg-type]  # duck-typed context
_WHITESPACE = " \t\n\r"
_NOT_FOUND = object()


def _loads_utf8(raw: bytes) -> object:
    """json.loads(raw) when raw is plain UTF-8 JSON, else _NOT_FOUND (json decides)."""
    # json.loads guesses UTF-16/32 from NUL bytes and honours BOMs: only an ASCII start is UTF-8.
    if len(raw) < 2 or raw[0] not in b"{[ \t\n\r" or not raw[1]:
        return _NOT_FOUND
    try:
        s = raw.decode("utf-8", "surrogatepass")
        n = len(s)
        i = 0
        while i < n and s[i] in _WHITESPACE:
            i += 1
        obj, end = _scan(s, i)
    except (ValueError, StopIteration):
        return _NOT_FOUND
    while end < n and s[end] in _WHITESPACE:
        end += 1
    return obj if end == n else _NOT_FOUND


def _not_serializable(o: object) -> object:
    raise TypeError(type(o).__name__)


def _dumps_compact(spec: object, ensure_ascii: bool) -> str:
    """json.dumps(spec, ensure_ascii=..., separators=(",", ":"))."""
    encode = _json.encode_basestring_ascii if ensure_ascii else _json.encode_basestring
    encoder = _json.make_encoder(
        {}, _not_serializable, encode, None, ":", ",", False, False, True
    )
    try:
        return "".join(encoder(spec, 0))
    except (TypeError, ValueError):
        import json

        return json.dumps(spec, ensure_ascii=ensure_ascii, separators=(",", ":"))


def parse(path: str, raw: bytes) -> dict[str, Any]:
    """The spec as a dict, or a SpecError naming every bad field."""
    spec = _loads_utf8(raw)
    if spec is _NOT_FOUND:
        import json

        try:
            spec = json.loads(raw)
        except UnicodeDecodeError as e:
            raise SpecError(f"{path}: not valid JSON: not UTF-8 ({e.reason})") from None
        except json.JSONDecodeError as e:
            raise SpecError(f"{path}: not valid JSON: {e}") from None
    errors = validate(spec)
    if errors:
        raise SpecError("; ".join(f"{path}: {e}" for e in errors))
    assert isinstance(spec, dict)
    return spec


def load(bundle: str) -> tuple[str, dict[str, Any]]:
    path, raw = read(bundle)
    return path, parse(path, raw)


def dumps(spec: dict[str, Any]) -> bytes:
    try:
        return _dumps_compact(spec, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        # A lone surrogate escape ("\ud800") is valid JSON (Go reads it as U+FFFD) but has no
        # UTF-8 form: write every non-ASCII character escaped, as such a file came.
        return _dumps_compact(spec, ensure_ascii=True).encode()


def write_atomic(path: str, data: bytes) -> None:
    """Replace `path` with `data` so that a reader sees the old file or the new, never a part."""
    st = os.stat(path)
    directory = os.path.dirname(path) or "."
    tmp = os.path.join(directory, f".{os.path.basename(path)}.retinue-{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
    try:
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fchmod(fd, st.st_mode & 0o7777)
            if os.geteuid() == 0:
                os.fchown(fd, st.st_uid, st.st_gid)
        finally:
            os.close(fd)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
