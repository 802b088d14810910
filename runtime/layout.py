"""Every name retinue shares between modules: in-container paths, the state directory's layout,
annotations and the defaults more than one module applies.

It imports nothing (importing it costs ~0.1 ms), so any module, the hot path's and the hook's
included, can take its names from here instead of spelling them out again.

A container's state directory (STATE_DIR/ROOT_KEY/ID, statedir.container_dir):

    control.sock           the supervisor's control socket (runtime, hook and CLI talk to it)
    init.sock              retinue-init's connection to the supervisor (mounted alone at
                           /.retinue/init.sock in the container)
    plan.json              the supervisor's input, written by the shim (planfile.py)
    retinue.state          the directory's integrity record (statedir.write_state_file)
    process/NAME.json      the OCI process of an exec-placed service for `runc exec --process`,
    process/NAME.WHICH.json  and of its probe, health and drain commands
    pids/NAME[.WHICH].pid  their pid files
    notify/NAME.sock       a service's sd_notify socket (mounted alone at /run/retinue/NAME.sock)
    sidecars/NAME          a sibling-placed service's bundle

and beside the roots' directories in the state directory: ids/ (the registry), cache/ (compiled
configurations), seccomp/ (listeners), sidecars/ (the siblings' runc root).
"""

# -- inside the container ------------------------------------------------------------------
# A service's files, read-only.
SERVICE_PREFIX = "/retinue"
# Outside /retinue, where services' files live: a service may be called "init".
INIT_PATH = "/.retinue/init"
INIT_SOCKET = "/.retinue/init.sock"
# Each notify service's socket, mounted alone.
NOTIFY_DIR = "/run/retinue"


def service_dir(service: str) -> str:
    """Where a service's files are inside the container."""
    return f"{SERVICE_PREFIX}/{service}"


def notify_socket(service: str) -> str:
    """Where a service finds its notify socket (its NOTIFY_SOCKET) inside the container."""
    return f"{NOTIFY_DIR}/{service}.sock"


# -- a container's state directory -----------------------------------------------------------
CONTROL_SOCKET = "control.sock"
INIT_SOCKET_NAME = "init.sock"
PLAN = "plan.json"
STATE_FILE = "retinue.state"
PROCESS_DIR = "process"
PIDS_DIR = "pids"
NOTIFY_SOCKETS = "notify"
SIDECARS = "sidecars"
# The state directory's subdirectories a create makes before the supervisor starts.
CONTAINER_SUBDIRS = (PIDS_DIR, PROCESS_DIR, NOTIFY_SOCKETS)


def process_file(service: str, which: str | None = None) -> str:
    """process/NAME.json (the service), process/NAME.WHICH.json (its probe, health, drain)."""
    name = service if which is None else f"{service}.{which}"
    return f"{PROCESS_DIR}/{name}.json"


def pid_file(service: str, which: str | None = None) -> str:
    name = service if which is None else f"{service}.{which}"
    return f"{PIDS_DIR}/{name}.pid"


def notify_socket_file(service: str) -> str:
    """The host side of notify_socket(service), relative to the container's state directory."""
    return f"{NOTIFY_SOCKETS}/{service}.sock"


def sidecar_bundle(service: str) -> str:
    return f"{SIDECARS}/{service}"


# -- the state directory itself --------------------------------------------------------------
DEFAULT_STATE_DIR = "/run/retinue"
MARKERS = "ids"  # the registry's name in the default state_dir
CACHE = "cache"
SECCOMP = "seccomp"
# What lives in the default state directory beside the roots' directories.
NOT_ROOTS = (CACHE, SECCOMP, SIDECARS, MARKERS)
REGISTRY = f"{DEFAULT_STATE_DIR}/{MARKERS}"
CACHE_DIR = f"{DEFAULT_STATE_DIR}/{CACHE}"
SECCOMP_DIR = f"{DEFAULT_STATE_DIR}/{SECCOMP}"
SUPERVISOR_LOG = "supervisor.log"  # in LOG_DIR/ID

# -- annotations ---------------------------------------------------------------------------------
# Chosen by a pod or container: its services (`.NAME`: one CRI container's).
SERVICES_ANNOTATION = "io.retinue.services"
# Written by retinue: what it attached and added, so that a later create can take it off.
ATTACHED_ANNOTATION = "io.retinue.attached"
SERVICES_RECORD_ANNOTATION = "io.retinue.attached-services"
MOUNTS_RECORD_ANNOTATION = "io.retinue.mounts"
# The arguments put before the container's own, as one string; `retinue plan` shows it and a
# later create of the same bundle takes them off again.
INIT_RECORD_ANNOTATION = "io.retinue.init"
# On a sibling container.
SIDECAR_OF = "io.retinue.sidecar-of"  # the app container's id
SIDECAR_SERVICE = "io.retinue.sidecar"  # the service's name
SIDECAR_DIR = "io.retinue.sidecar-dir"  # the app's state directory: gone means orphaned
SIDECAR_IMAGE = "io.retinue.image"  # the image's manifest digest

# -- defaults more than one module applies -------------------------------------------------------
DEFAULT_CONFIG = "/etc/retinue/config.toml"
CONFIG_ENV = "RETINUE_CONFIG"
DEFAULT_IMAGE_DIR = "/var/lib/retinue/images"
DEFAULT_LOG_DIR = "/var/log/retinue"
# The PATH a service's process gets (exec placement and sibling alike).
SERVICE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
NOTIFY_RATE = 50.0  # datagrams a second per notify socket
SECCOMP_RATE = 500.0
# argv[0] of retinue's OCI hooks: how a later create recognises them.
HOOK_ARGV0 = "retinue-hook"
