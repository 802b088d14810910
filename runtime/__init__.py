"""retinue: system services for containers, as a drop-in OCI runtime shim.

Nothing is imported here, nor in any room's __init__: every runtime call of every container
starts this package, and the pass-through path must not pay for modules it does not use.

The rooms, top layer first; a module imports its own room and the layers below, never one
above nor a peer (tests/test_module_boundaries.py holds the order):

    cli/ hooks/   entry points: shim (retinue-runtime), run, launcher + sh/, admin (retinue),
                  demo, rootfs; hooks/hook (retinue-hook)
    config/       the administrator's configuration: settings, services, cache (the hot path's)
    supervisor/   the per-container supervisor process (its own map in supervisor/__init__)
    policy/       which rules and services a container gets: select, graph, attach
    host/         effects on this host: statedir, spawn (of the supervisor), lower, runclog,
                  cgroups, mounts, userns, images, siblings, install
    spec/         the OCI spec as a lossless dict: bundle, validate, edits, execspec, sibling
    seccomp/      the seccomp broker: profile merge, agent, handlers
    (ground)      shared vocabulary: layout (every shared name), control (the supervisor's
                  protocol), planfile (plan.json), argv, errors, compiled, tomlmodel, ratelimit

config/ and supervisor/ share a layer and never import each other. ARCHITECTURE.md follows a
create through the rooms.
"""

__version__ = "0.1.0"

# Every shared name (paths, the state directory's layout, annotations, defaults): layout.py.


def config_source() -> tuple[str, bool]:
    """The configuration file this call reads, and whether RETINUE_CONFIG named it."""
    import os  # already loaded by the interpreter's start-up: costs nothing

    from .layout import CONFIG_ENV, DEFAULT_CONFIG

    explicit = os.environ.get(CONFIG_ENV, "")
    return explicit or DEFAULT_CONFIG, bool(explicit)
