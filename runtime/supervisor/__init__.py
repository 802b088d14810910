"""The per-container supervisor: one process per container that has services.

One failure domain per container, as in Titus: it starts the services inside the created
container with the lower runtime's `exec`, in dependency order, answers the shim's `start` when
the gate opens, restarts services by policy, keeps their logs, and stops them in reverse order
whichever path ends the container. It is spawned by the shim at create, before the lower create
runs, and leaves nothing behind when it exits.

Where things are:
  __main__   the process: reads plan.json, joins its cgroup, runs the Supervisor
  core       the container: gate, start and stop order, init's exit, hooks, control requests
  unit       one service's state machine: start, readiness, restart policy, stop
  runner     how a unit is run (the Runner interface; ExecRunner: the lower runtime's exec)
  notify     the sd_notify sockets, rate-limited
  readiness  the tcp/file/descendant checks a unit's readiness uses
  probes     tcp/http probes in the container's network namespace (no process), and commands
             run inside it (probe, health, drain) that are killed when they hang
  initlink   the channel with retinue-init, the container's PID 1
  control    the control socket's protocol; spawn: how the shim starts a supervisor
  procs      spawning and reaping children; logs: rotating service logs
  execerror  which failed starts no retry can fix; retention: old log directories
"""
