"""Writes the launchers for the hot entry points.

pip's console scripts start the interpreter with `site` (every .pth file) and import `re`; on a
2-vCPU host that is ~8 ms on every runtime call. These launchers run the venv's interpreter with
`-I -S` and put only the package's own site-packages on sys.path.

    python -m retinue.launcher --bin-dir /usr/local/bin
"""

from __future__ import annotations

import argparse
import os
import sys
import sysconfig

ENTRY_POINTS = {
    "retinue-runtime": "from retinue.shim import main\nmain()\n",
    "retinue-hook": "import sys\nfrom retinue.hooks.hook import main\nsys.exit(main())\n",
}


def render(module_code: str, python: str, site_packages: str) -> str:
    return (
        f"#!{python} -IS\n"
        "# retinue launcher: -I -S skips site-packages discovery and the environment.\n"
        "import sys\n"
        f"sys.path.insert(0, {site_packages!r})\n"
        f"{module_code}"
    )


def write(bin_dir: str, python: str, site_packages: str) -> list[str]:
    os.makedirs(bin_dir, exist_ok=True)
    written = []
    for name, code in ENTRY_POINTS.items():
        target = os.path.join(bin_dir, name)
        tmp = f"{target}.{os.getpid()}.tmp"
        with open(tmp, "w") as f:
            f.write(render(code, python, site_packages))
        os.chmod(tmp, 0o755)
        os.replace(tmp, target)
        written.append(target)
    admin = os.path.join(bin_dir, "retinue")
    source = os.path.join(os.path.dirname(python), "retinue")
    if os.path.abspath(admin) != os.path.abspath(source):
        if os.path.lexists(admin):
            os.unlink(admin)
        os.symlink(source, admin)
        written.append(admin)
    return written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bin-dir", required=True)
    ns = parser.parse_args()
    python = os.path.join(sys.prefix, "bin", "python3")
    for path in write(ns.bin_dir, python, sysconfig.get_paths()["purelib"]):
        print(path)


if __name__ == "__main__":
    main()
