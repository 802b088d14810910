"""retinue: system services for containers, as a drop-in OCI runtime shim.

Nothing is imported here: every runtime call of every container starts this package, and the
pass-through path must not pay for modules it does not use.
"""

__version__ = "0.1.0"

# Every shared name (paths, the state directory's layout, annotations, defaults): layout.py.


def config_source() -> tuple[str, bool]:
    """The configuration file this call reads, and whether RETINUE_CONFIG named it."""
    import os  # already loaded by the interpreter's start-up: costs nothing

    from .layout import CONFIG_ENV, DEFAULT_CONFIG

    explicit = os.environ.get(CONFIG_ENV, "")
    return explicit or DEFAULT_CONFIG, bool(explicit)
