"""Which failures of the lower runtime's `exec` will fail the same way on every retry.

A service whose command or working directory does not exist in the container, or cannot be
executed, is not helped by a restart with backoff: the start fails at once with the runtime's own
reason instead of after the whole start timeout. Anything not recognised here (a full pids
cgroup, a container that is just stopping) is retried as before.
"""

from __future__ import annotations

import json

# Measured with runc 1.1.5 (`runc exec --detach --process`), the text after "exec failed: ":
#   unable to start container process: chdir to cwd ("/x") set in config.json failed: ...
#   unable to start container process: exec: "/x": stat /x: no such file or directory
#   unable to start container process: exec: "x": executable file not found in $PATH
#   unable to start container process: exec: "/etc/passwd": permission denied
#   invalid character 'b' looking for beginning of object key string   (a bad process.json)
# and, for crun, its wording of the first three.
_STARTING = "unable to start container process: "
_PERMANENT_AFTER_START = ("chdir to cwd (",)
_PERMANENT_EXEC = (
    "no such file or directory",
    "executable file not found in $PATH",
    "permission denied",
    "exec format error",
    "not a directory",
)
_PERMANENT_JSON = ("invalid character ", "unexpected end of JSON input", "json: cannot unmarshal")
_CRUN = ("chdir to `", "executable file `")


def _message(line: str) -> str:
    """The msg of a logrus text line (time="..." level=error msg="..."), else the line."""
    _, found, quoted = line.partition(" msg=")
    if not found:
        return line.strip()
    try:
        text = json.loads(quoted.strip())
    except ValueError:
        return quoted.strip()
    return text if isinstance(text, str) else line.strip()


def permanent(output: str) -> str | None:
    """The lower runtime's reason when its output says the exec can never succeed, else None."""
    for line in reversed(output.splitlines()):
        msg = _message(line)
        if not msg:
            continue
        detail = msg.removeprefix("exec failed: ")
        if detail.startswith(_STARTING):
            rest = detail[len(_STARTING) :]
            if rest.startswith(_PERMANENT_AFTER_START) or (
                rest.startswith("exec: ") and rest.endswith(_PERMANENT_EXEC)
            ):
                return rest
        elif msg.startswith("exec failed: ") and detail.startswith(_PERMANENT_JSON):
            return f"invalid process.json: {detail}"
        elif any(marker in msg for marker in _CRUN):
            return msg
        return None  # only the runtime's last word counts
    return None
