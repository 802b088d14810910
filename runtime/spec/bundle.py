"""Reading and writing a bundle's config.json.

The spec stays a plain dict: every field the shim does not own keeps its key, value, nulls and
order (typed round trips that dropped newer fields broke real containers). Writes are atomic: a
temp file in the same directory, the original mode and owner, then rename.
"""

from __future__ import annotations

import _json
import os

from ..errors import SpecError, clip

TYPE_CHECKING = False  # typing costs ~10 ms to import; mypy reads this as True
if TYPE_CHECKING:
    from typing import Any

def config_path(bundle: str) -> str:
    return os.path.join(bundle, "config.json")


# runc reads config.json whole, whatever it is (a FIFO blocks it, /dev/zero runs until the
# decoder fails); a real spec is tens of kilobytes, and a bound keeps a bundle's owner from
# making the shim read for ever or exhaust memory.
MAX_BYTES = 64 << 20
# Go's decoder takes up to 10,000 levels; this interpreter's parser, comparisons and encoders
# recurse per level and stop near 1,000. A real spec is under 10 deep: one the parser cannot read,
# or one deeper than this that retinue would edit, is refused with its depth, never with a
# RecursionError (one that nothing attaches to goes to runc as it is).
MAX_DEPTH = 500


def read(bundle: str) -> tuple[str, bytes]:
    """The path of config.json and its bytes; errors name the bundle and what is wrong."""
    if not os.path.isdir(bundle):
        what = "not a directory" if os.path.exists(bundle) else "no such directory"
        raise SpecError(f"bundle {bundle}: {what}")
    path = config_path(bundle)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused below.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except FileNotFoundError:
        raise SpecError(f"{path}: no such file") from None
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    try:
        st = os.fstat(fd)
        if st.st_mode & 0o170000 == 0o040000:
            raise SpecError(f"{path}: cannot read: Is a directory")
        if st.st_mode & 0o170000 != 0o100000:
            raise SpecError(f"{path}: not a regular file")
        if st.st_size > MAX_BYTES:
            raise SpecError(f"{path}: {st.st_size} bytes, more than retinue reads ({MAX_BYTES})")
        chunks = []
        left = MAX_BYTES + 1  # the file may grow while it is read
        while left > 0:
            chunk = os.read(fd, min(left, max(st.st_size + 1, 65536)))
            if not chunk:
                break
            chunks.append(chunk)
            left -= len(chunk)
        if left <= 0:
            raise SpecError(f"{path}: more than {MAX_BYTES} bytes, more than retinue reads")
        return path, b"".join(chunks)
    except OSError as e:
        raise SpecError(f"{path}: cannot read: {e.strerror}") from None
    finally:
        os.close(fd)


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
    if type(value) is kind:
        return True
    if isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return True
    errors.append(f"{path}: expected {what}, got {_got(value)}")
    return False


def _strings(errors: list[str], path: str, value: object) -> None:
    if _expect(errors, path, value, list, "a list of strings"):
        assert isinstance(value, list)
        try:
            "".join(value)  # every item a string, checked in C: a seccomp profile has hundreds
            return
        except TypeError:
            pass
        for i, item in enumerate(value):
            _expect(errors, f"{path}[{i}]", item, str, "a string")


def _optional_strings(errors: list[str], path: str, value: object) -> None:
    # Go leaves a field at its zero value for a JSON null, as if it were absent.
    if value is not None:
        _strings(errors, path, value)


def _object(errors: list[str], path: str, value: object, fields: tuple[str, ...]) -> bool:
    """Whether value is an object (null counts as absent: False, no error); its keys checked."""
    if value is None or not _expect(errors, path, value, dict, "an object"):
        return False
    assert isinstance(value, dict)
    _case_variants(errors, path, value, fields)
    return True


# Go's decoder matches an object's keys to a struct's fields without regard to case, and a second
# key for one field decodes into the same value again (a merge). Only the fields retinue reads or
# edits matter: another field is runc's to read, and retinue never touches it.
TOP_FIELDS = ("process", "annotations", "mounts", "hooks", "linux")
PROCESS_FIELDS = (
    "env",
    "args",
    "terminal",
    "capabilities",
    "apparmorProfile",
    "selinuxLabel",
    "rlimits",
)
# Beyond ASCII, Go folds these four to ASCII letters (unicode.ToUpper(unicode.ToLower(r)) since Go
# 1.21; the long s and the Kelvin sign before it too).
_GO_FOLD = {"\u017f": "S", "\u212a": "K", "\u0131": "I", "\u0130": "I"}


def _fold(key: str) -> str:
    if key.isascii():
        return key.upper()
    return "".join(_GO_FOLD.get(c, c.upper() if c.isascii() else c) for c in key)


_FOLDED: dict[tuple[str, ...], tuple[frozenset[str], dict[str, str]]] = {}


def _case_variants(
    errors: list[str], path: str, obj: dict[str, Any], fields: tuple[str, ...]
) -> None:
    """Read `obj` as runc does: a key that is another case of a field is that field.

    A lone ASCII variant ("Process") is renamed in place to the field's own spelling, which runc
    reads the same way; two keys for one field (runc would merge them) or a non-ASCII spelling
    (which Go versions fold differently) are refused.
    """
    known = _FOLDED.get(fields)
    if known is None:
        known = _FOLDED[fields] = (frozenset(fields), {f.upper(): f for f in fields})
    names, folded = known
    others = obj.keys() - names
    if not others:
        return
    variants = {}
    for key in others:
        field = folded.get(_fold(key))
        if field is not None:
            variants[key] = field
    if not variants:
        return
    by_field: dict[str, list[str]] = {}
    for key in obj:
        field = key if key in fields else variants.get(key)
        if field is not None:
            by_field.setdefault(field, []).append(key)
    at = f"{path}." if path else ""
    problems = []
    for field, keys in by_field.items():
        if len(keys) > 1:
            problems.append(
                f"{at}{field}: given as {', '.join(repr(k) for k in keys)}; runc reads keys "
                "without regard to case and would merge them: keep one"
            )
        elif not keys[0].isascii():
            problems.append(f"{at}{keys[0]!r}: runc reads this key as {field!r}; spell it so")
    if problems:
        errors += problems
        return
    items = [(variants.get(k, k), v) for k, v in obj.items()]
    obj.clear()
    obj.update(items)


def validate(spec: object) -> list[str]:
    """Problems with the fields every create reads (to select), each naming its JSON path.

    Keys that runc would read as one of those fields are renamed to its spelling in place.
    """
    errors: list[str] = []
    if not _expect(errors, "(top level)", spec, dict, "an object"):
        return errors
    assert isinstance(spec, dict)
    _case_variants(errors, "", spec, TOP_FIELDS)
    if "process" not in spec:
        if not errors:  # a misspelt `process` was named already
            errors.append("process: missing (required by runc to create a container)")
    elif _expect(errors, "process", spec["process"], dict, "an object"):
        process = spec["process"]
        _case_variants(errors, "process", process, PROCESS_FIELDS)
        _optional_strings(errors, "process.env", process.get("env"))
        _optional_strings(errors, "process.args", process.get("args"))
    annotations = spec.get("annotations")
    if annotations is not None and _expect(
        errors, "annotations", annotations, dict, "an object of strings"
    ):
        for key, value in annotations.items():
            _expect(errors, f"annotations.{clip(key)}", value, str, "a string")
    return errors


# `import json` costs ~9 ms (it pulls in re and enum), more than everything else on the create
# path. json.loads and json.dumps use these C functions of _json; called directly they give the
# same objects and the same text. Anything unusual (another encoding, an error) goes to the json
# module itself, so its results and messages stay exactly json's.
_CONSTANTS = {"-Infinity": float("-inf"), "Infinity": float("inf"), "NaN": float("nan")}


# A key given twice in one object: json keeps the last, Go's decoder reads every one (a struct or
# map given twice is merged). Every object goes through this hook so that such
# objects are noted as they are built: ~15 us more for Docker's 9 KB spec (42 instead of 27 us,
# best of 30 runs), less than a pre-check of the raw bytes costs, and exact. `parse` empties it.
_DUPLICATED: list[tuple[dict[str, Any], list[str]]] = []


def _object_pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        twice = []
        for key, _ in pairs:
            if key in seen and key not in twice:
                twice.append(key)
            seen.add(key)
        _DUPLICATED.append((obj, twice))
    return obj


class _ScannerContext:
    strict = True
    object_hook = None
    object_pairs_hook = staticmethod(_object_pairs)
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
    except RecursionError:
        raise
    except Exception:
        # Not only ValueError: on bad input the scanner looks for json.decoder's error class in
        # sys.modules, and without it fails with a SystemError. json itself says what is wrong.
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


def _raw_depth(raw: bytes) -> int:
    """How deeply brackets nest in raw, outside strings (for text too deep to parse)."""
    depth = deepest = 0
    in_string = escaped = False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte == 0x5B or byte == 0x7B:
            depth += 1
            deepest = max(deepest, depth)
        elif byte == 0x5D or byte == 0x7D:
            depth -= 1
    return deepest


def _too_deep(path: str, depth: int) -> SpecError:
    return SpecError(f"{path}: nested {depth} levels deep, more than retinue reads ({MAX_DEPTH})")


class Spec(dict):  # type: ignore[type-arg]  # dict[str, Any] at run time
    """A parsed config.json; `duplicates` are the keys given twice that selection does not read
    (those are refused at once): a spec that retinue rewrites must have none."""

    duplicates: tuple[str, ...] = ()


def _selects(at: str, key: str) -> bool:
    """Whether the key `key` of the object at `at` is one every create reads to select (see
    validate): process and annotations, process.env and process.args, any annotation."""
    if not at:
        return _fold(key) in ("PROCESS", "ANNOTATIONS")
    if "." in at or "[" in at:
        return False
    return _fold(at) == "ANNOTATIONS" or (_fold(at) == "PROCESS" and _fold(key) in ("ENV", "ARGS"))


def _duplicates(spec: object) -> tuple[list[str], list[str]]:
    """The keys given twice (noted by _object_pairs), as JSON paths: those selection reads,
    then the others."""
    if not _DUPLICATED:
        return [], []
    where: dict[int, str] = {}
    stack: list[tuple[str, object]] = [("", spec)]
    while stack:
        at, value = stack.pop()
        if type(value) is dict:
            where[id(value)] = at
            for key, item in value.items():
                if isinstance(item, (dict, list)):
                    stack.append((f"{at}.{clip(key)}" if at else clip(key), item))
        elif type(value) is list:
            for i, item in enumerate(value):
                if isinstance(item, (dict, list)):
                    stack.append((f"{at}[{i}]", item))
    selection: list[str] = []
    other: list[str] = []
    for obj, keys in _DUPLICATED:
        found = where.get(id(obj))
        if found is None:
            continue  # inside a value given twice and dropped: that key is named
        at = found
        for key in keys:
            name = f"{at}.{clip(key)}" if at else clip(key)
            (selection if _selects(at, key) else other).append(
                f"{name}: given more than once; runc reads every one (merging objects), retinue "
                "only the last: keep one"
            )
    return selection, other


def check_rewritable(path: str, spec: dict[str, Any]) -> None:
    """SpecError when retinue would write `spec` back with keys runc reads twice dropped."""
    twice = getattr(spec, "duplicates", ())
    if twice:
        raise SpecError("; ".join(f"{path}: {e}" for e in twice))


def parse(path: str, raw: bytes) -> dict[str, Any]:
    """The spec as a dict (a Spec), or a SpecError naming every bad field."""
    _DUPLICATED.clear()
    try:
        spec = _loads_utf8(raw)
        if spec is _NOT_FOUND:
            import json

            try:
                spec = json.loads(raw, object_pairs_hook=_object_pairs)
            except UnicodeDecodeError as e:
                raise SpecError(f"{path}: not valid JSON: not UTF-8 ({e.reason})") from None
            except ValueError as e:  # JSONDecodeError, or an integer too long to convert
                raise SpecError(f"{path}: not valid JSON: {e}") from None
    except RecursionError:
        _DUPLICATED.clear()
        raise _too_deep(path, _raw_depth(raw)) from None
    try:
        selection, other = _duplicates(spec)
    finally:
        _DUPLICATED.clear()
    errors = selection + validate(spec)
    if errors:
        raise SpecError("; ".join(f"{path}: {e}" for e in errors))
    assert isinstance(spec, dict)
    spec = Spec(spec)
    spec.duplicates = tuple(other)
    return spec


def has_user_namespace(spec: dict[str, Any]) -> bool:
    """Whether the spec gives the container a user namespace (`linux.namespaces`)."""
    linux = spec.get("linux")
    namespaces = linux.get("namespaces") if isinstance(linux, dict) else None
    return any(isinstance(ns, dict) and ns.get("type") == "user" for ns in namespaces or [])


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
