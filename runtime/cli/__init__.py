"""Entry points: the OCI runtime shim and its sh launchers, runc's run, the admin CLI, the demo."""
