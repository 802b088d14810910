"""retinue: system services for containers, as a drop-in OCI runtime shim.

Nothing is imported here: every runtime call of every container starts this package, and the
pass-through path must not pay for modules it does not use.
"""

__version__ = "0.1.0"

# Every shared name (paths, the state directory's layout, annotations, defaults): layout.py.
