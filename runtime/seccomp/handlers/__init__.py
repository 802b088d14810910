"""Built-in seccomp handlers, registered in the entry-point group `retinue.seccomp`."""
