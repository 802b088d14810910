"""The package build compiles retinue-init (C) into retinue/libexec; everything else is in
pyproject.toml. PID 1 must run in any image (scratch, distroless), so the binary is static.
No C compiler means no package: a retinue without its init would attach services that the
kernel kills with the main process, so the build fails loudly instead."""

from __future__ import annotations

import os
import shutil
import subprocess

from setuptools import setup
from setuptools.command.build_py import build_py

SOURCE = os.path.join("init", "retinue-init.c")
FLAGS = ["-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror"]


class BuildWithInit(build_py):
    def run(self) -> None:
        super().run()
        target = os.path.join(self.build_lib, "retinue", "libexec", "retinue-init")
        os.makedirs(os.path.dirname(target), exist_ok=True)
        # musl first: a tenth of glibc's static size, and no NSS surprises; glibc's gcc works.
        compilers = [c for c in ("musl-gcc", "gcc", "cc") if shutil.which(c)]
        if not compilers:
            raise SystemExit(
                "retinue: cannot build retinue-init: no C compiler (musl-gcc or gcc) on PATH; "
                "install musl-tools or gcc (make deps does)"
            )
        errors = []
        for cc in compilers:
            result = subprocess.run(
                [cc, *FLAGS, "-o", target, SOURCE], capture_output=True, text=True
            )
            if result.returncode == 0:
                return
            errors.append(f"{cc}: {result.stderr.strip()}")
        raise SystemExit("retinue: cannot build retinue-init:\n" + "\n".join(errors))


setup(cmdclass={"build_py": BuildWithInit})
