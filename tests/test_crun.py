"""crun as the lower runtime: chosen by the configuration, and passed through unchanged.

crun 1.8.1 cannot create containers on this host (hybrid cgroups): what is compared here is
everything else, and create's own error. Each call runs directly against crun and through the
shim, each with its own private --root, and the results must be equal once the roots are
normalised.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

import pytest

# Not imported from conftest: several conftest modules share that name in one session.
CRUN = shutil.which("crun") or "/usr/bin/crun"
BundleFactory = Callable[..., Path]
ConfigFactory = Callable[..., Path]
TIMEOUT = 60

pytestmark = pytest.mark.skipif(not os.path.exists(CRUN), reason="crun is not installed")


def call(argv: list[str], cwd: Path | None = None) -> tuple[int, str, str]:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.run(
            argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, cwd=cwd, timeout=TIMEOUT
        )
        out.seek(0)
        err.seek(0)
        return proc.returncode, out.read().decode(), err.read().decode()


@pytest.fixture(params=["name", "absolute path"])
def crun_config(request: pytest.FixtureRequest, make_config: ConfigFactory) -> Path:
    runtime = "crun" if request.param == "name" else CRUN
    return make_config("", f'runtime = "{runtime}"\n')


class Compare:
    def __init__(self, shim: str, tmp: Path) -> None:
        self.shim = shim
        self.roots = {"crun": tmp / "root-crun", "shim": tmp / "root-shim"}
        self.work = {"crun": tmp / "work-crun", "shim": tmp / "work-shim"}
        for d in (*self.roots.values(), *self.work.values()):
            d.mkdir()

    def both(self, *args: str, cwd: str | None = None) -> tuple[int, str, str]:
        results = []
        for side, exe in (("crun", CRUN), ("shim", self.shim)):
            root, work = str(self.roots[side]), str(self.work[side])
            argv = [exe, "--root", root, *(a.replace("{work}", work) for a in args)]
            rc, out, err = call(argv, cwd=Path(work) / cwd if cwd else None)
            results.append(
                (rc, out.replace(root, "<ROOT>").replace(work, "<WORK>"),
                 err.replace(root, "<ROOT>").replace(work, "<WORK>"))
            )
        assert results[1] == results[0], args
        return results[1]


@pytest.fixture
def compare(shim: str, tmp_path: Path, crun_config: Path) -> Compare:
    return Compare(shim, tmp_path)


def test_selected_by_config(compare: Compare) -> None:
    rc, out, err = compare.both("--version")
    assert rc == 0 and out.startswith("crun version") and err == ""


def test_features_spec_list(compare: Compare) -> None:
    compare.both("features")  # crun 1.8.1 has none: its own "unknown command"
    compare.both("spec", "--bundle", "{work}")
    assert (compare.work["shim"] / "config.json").read_bytes() == (
        compare.work["crun"] / "config.json"
    ).read_bytes()
    compare.both("spec", "--bundle", "{work}")  # exists: crun's error
    compare.both("spec", "--rootless", "--bundle", "{work}/nosuch")
    rc, out, _ = compare.both("list")
    assert rc == 0 and out.split()[:2] == ["NAME", "PID"]
    compare.both("list", "-q")
    compare.both("--help")


def test_errors(compare: Compare) -> None:
    rc, _, err = compare.both("state", "nosuch")
    assert rc != 0 and "nosuch" in err
    compare.both("delete", "nosuch")
    compare.both("kill", "nosuch", "KILL")
    compare.both("start", "nosuch")
    compare.both("nosuch-command")
    compare.both("--log", "{work}/log.json", "--log-format", "json", "state", "nosuch")


def test_create_fails_as_crun_does(
    compare: Compare, make_bundle: BundleFactory, container_id: str
) -> None:
    """Creating needs cgroups crun 1.8.1 cannot drive here: the same refusal through the shim."""
    bundle = make_bundle(["true"])
    rc, _, _ = compare.both("create", "--bundle", str(bundle), container_id)
    if rc == 0:  # a host where crun works: clean up after both
        for root in compare.roots.values():
            call([CRUN, "--root", str(root), "delete", "-f", container_id])
    compare.both("list", "-q")
