"""Which `runc exec` failures the supervisor treats as permanent: runc 1.1.5's own lines."""

from __future__ import annotations

import pytest
from retinue.supervisor import execerror


def line(msg: str) -> str:
    quoted = msg.replace("\\", "\\\\").replace('"', '\\"')
    return f'time="2026-11-30T07:42:50Z" level=error msg="{quoted}"'


@pytest.mark.parametrize(
    ("msg", "reason"),
    [
        ('exec failed: unable to start container process: chdir to cwd ("/nonexistent") set in '
         "config.json failed: no such file or directory",
         'chdir to cwd ("/nonexistent") set in config.json failed: no such file or directory'),
        ('exec failed: unable to start container process: exec: "/bin/nope": stat /bin/nope: no '
         "such file or directory",
         'exec: "/bin/nope": stat /bin/nope: no such file or directory'),
        ('exec failed: unable to start container process: exec: "nope": executable file not '
         "found in $PATH", 'exec: "nope": executable file not found in $PATH'),
        ('exec failed: unable to start container process: exec: "/etc/passwd": permission denied',
         'exec: "/etc/passwd": permission denied'),
        ("exec failed: invalid character 'b' looking for beginning of object key string",
         "invalid process.json: invalid character 'b' looking for beginning of object key "
         "string"),
    ],
)
def test_permanent(msg: str, reason: str) -> None:
    output = "some earlier output of the service\n" + line(msg) + "\n"
    assert execerror.permanent(output) == reason


@pytest.mark.parametrize(
    "output",
    [
        "",
        line("exec failed: unable to start container process: error during container init: "
             "fork/exec /proc/self/exe: resource temporarily unavailable"),
        line("cannot exec in a stopped container"),
        line("container not running"),
        # An old permanent-looking line, then a different last word: only the last counts.
        line('exec failed: unable to start container process: exec: "x": permission denied')
        + "\n" + line("exec failed: unable to start container process: some other failure"),
        "exec: \"x\": permission denied\n",  # a service's own output, not the runtime's
    ],
)
def test_not_permanent(output: str) -> None:
    assert execerror.permanent(output) is None
