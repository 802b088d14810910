"""retinue: system services for containers, as a drop-in OCI runtime shim.

Nothing is imported here: every runtime call of every container starts this package, and the
pass-through path must not pay for modules it does not use.
"""

__version__ = "0.1.0"

# Here, not in config.py or confcache.py: both need them, and neither may import the other at
# module level (confcache is on the hot path; config loads attrs and cattrs).
DEFAULT_CONFIG = "/etc/retinue/config.toml"
CONFIG_ENV = "RETINUE_CONFIG"
CACHE_DIR = "/run/retinue/cache"


def config_source() -> tuple[str, bool]:
    """The configuration file this call reads, and whether RETINUE_CONFIG named it."""
    import os  # already loaded by the interpreter's start-up: costs nothing

    explicit = os.environ.get(CONFIG_ENV, "")
    return explicit or DEFAULT_CONFIG, bool(explicit)
