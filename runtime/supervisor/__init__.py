"""The per-container supervisor: one process per container that has services.

One failure domain per container, as in Titus: it starts the services inside the created
container with the lower runtime's `exec`, in dependency order, answers the shim's `start` when
the gate opens, restarts services by policy, keeps their logs, and stops them in reverse order
whichever path ends the container. It is spawned by the shim at create, before the lower create
runs, and leaves nothing behind when it exits.

Where things are (each module imports only modules listed after it; no cycle, as
tests/test_module_boundaries.py checks):
  __main__    the process: reads plan.json, joins its cgroup, runs the Supervisor and its server
  server      the control server: reads a request, checks it (retinue.control), calls the
              Supervisor
  supervisor  the orchestration: start order, the gate, stop order, fate sharing, status
  initlink    the channel with retinue-init, the container's PID 1; on "exit N" it calls one
              callback the Supervisor gives it
  notify      the sd_notify sockets, rate-limited
  unit        one service's state machine: State, TRANSITIONS, set_state, Result; readiness,
              restart policy, stop
  kinds       what differs between a daemon and a one-shot (a small strategy)
  containerrunner, apphandles
              a unit run as a sibling container, and the app's namespaces and shares it joins
  runner      the Runner interface (it knows no Unit), Run, and ExecRunner (the lower
              runtime's exec)
  container   the app container's life: its init (pid, pidfd), exited, paused, signal
  probes      tcp/http probes in the container's network namespace (no process), and commands
              run inside it (probe, health, drain) that are killed when they hang
  readiness   the tcp/file/descendant checks a unit's readiness uses
  procs       spawning and reaping children; logs: rotating service logs
  execerror   which failed starts no retry can fix; retention: old log directories
How the shim starts a supervisor is retinue.host.spawn (it runs in the shim, not here).
The control protocol itself is retinue.control: the shim, the CLI and the hook speak it too.
"""
