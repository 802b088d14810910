"""The OCI process a service runs as (`runc exec --process`): a pure function.

Nothing the container's owner controls reaches a service beyond what the container itself
already has: the command, user, extra capabilities and env come from the administrator's service
definition; from the container's spec only its capability sets, AppArmor profile, SELinux label
and rlimits are kept, so a service is confined exactly as the container is.
"""

from __future__ import annotations

from ..layout import SERVICE_PATH, notify_socket

TYPE_CHECKING = False  # the shim's create path imports this; typing costs ~10 ms
if TYPE_CHECKING:
    from typing import Any

    from ..compiled import CompiledService

PATH = SERVICE_PATH
CAP_SETS = ("bounding", "effective", "permitted", "inheritable", "ambient")


def _capabilities(
    container: dict[str, Any] | None, extra: list[str], uid: int
) -> dict[str, list[str]]:
    base = container or {}
    caps: dict[str, list[str]] = {}
    for name in CAP_SETS:
        current = list(base.get(name) or [])
        # A non-root process keeps capabilities across exec only through the ambient set.
        wanted = [] if name == "ambient" and uid == 0 else extra
        caps[name] = current + [c for c in dict.fromkeys(wanted) if c not in current]
    return caps


def service_env(service: CompiledService, container_id: str) -> list[str]:
    env = {
        "PATH": PATH,
        "HOME": "/",
        "RETINUE_SERVICE": service["name"],
        "RETINUE_CONTAINER_ID": container_id,
    }
    if service["ready"] == "notify":
        env["NOTIFY_SOCKET"] = notify_socket(service["name"])
    env.update(dict(service["env"]))
    return [f"{k}={v}" for k, v in env.items()]


def process(
    service: CompiledService, spec: dict[str, Any], container_id: str, args: list[str] | None = None
) -> dict[str, Any]:
    container = spec.get("process") or {}
    proc: dict[str, Any] = {
        "terminal": False,
        "user": {"uid": service["uid"], "gid": service["gid"]},
        "args": args or service["command"],
        "env": service_env(service, container_id),
        "cwd": service["cwd"],
        "capabilities": _capabilities(
            container.get("capabilities"), service["capabilities"], service["uid"]
        ),
        "noNewPrivileges": True,
    }
    for key in ("apparmorProfile", "selinuxLabel", "rlimits"):
        if container.get(key):
            proc[key] = container[key]
    return proc
