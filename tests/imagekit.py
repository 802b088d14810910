"""Service images the tests build from this machine's own Debian programs (no network).

`nginx_rootfs` copies Debian's dynamically linked nginx with the libraries `ldd` names: an
image a distroless app could never run inside itself. `busybox_rootfs` is busybox-static with a
few applet links. `oci_layout` writes either as an OCI image layout directory (through
engines.oci_archive), which `retinue image import` then takes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tarfile
from pathlib import Path

import engines

NGINX_CONF = """\
worker_processes 1;
master_process off;
daemon off;
pid /tmp/nginx.pid;
error_log stderr info;
events { worker_connections 64; }
http {
    access_log off;
    client_body_temp_path /tmp/body;
    proxy_temp_path /tmp/proxy;
    fastcgi_temp_path /tmp/fastcgi;
    uwsgi_temp_path /tmp/uwsgi;
    scgi_temp_path /tmp/scgi;
    server {
        listen 127.0.0.1:PORT;
        location / { return 200 "hello from the nginx sidecar\\n"; }
    }
}
"""


def copy_with_libraries(binary: str, rootfs: Path) -> None:
    """`binary` and every shared object it loads (ldd), at their own paths under `rootfs`."""
    listed = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    paths = [binary]
    for line in listed.splitlines():
        m = re.search(r"(/\S+) \(0x", line)
        if m:
            paths.append(m.group(1))
    for path in paths:
        dest = rootfs / path.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(os.path.realpath(path), dest)


def _etc(rootfs: Path) -> None:
    etc = rootfs / "etc"
    etc.mkdir(parents=True, exist_ok=True)
    (etc / "passwd").write_text("root:x:0:0::/:/bin/sh\nnobody:x:65534:65534::/:/bin/sh\n")
    (etc / "group").write_text("root:x:0:\nnogroup:x:65534:\n")


def nginx_rootfs(dest: Path, port: int) -> Path:
    copy_with_libraries("/usr/sbin/nginx", dest)
    _etc(dest)
    (dest / "etc" / "nginx").mkdir(parents=True, exist_ok=True)
    (dest / "etc" / "nginx" / "nginx.conf").write_text(NGINX_CONF.replace("PORT", str(port)))
    return dest


def busybox_rootfs(dest: Path, applets: tuple[str, ...] = ("sh", "sleep", "head", "tr")) -> Path:
    (dest / "bin").mkdir(parents=True, exist_ok=True)
    shutil.copy2("/bin/busybox", dest / "bin" / "busybox")
    for applet in applets:
        os.symlink("busybox", dest / "bin" / applet)
    _etc(dest)
    return dest


def oci_layout(rootfs: Path, dest: Path, cmd: list[str]) -> Path:
    """An OCI image layout directory of `rootfs` (one layer) with `cmd` as its Cmd."""
    archive = dest.with_suffix(".tar")
    engines.oci_archive(rootfs, archive, "test:1", cmd=cmd)
    dest.mkdir(parents=True)
    with tarfile.open(archive) as tar:
        tar.extractall(dest)
    archive.unlink()
    return dest
