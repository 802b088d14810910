"""Effects on this host: state directories, cgroups, mounts, images, the lower runtime, engines."""
