"""The per-container supervisor: one process per container that has services.

One failure domain per container, as in Titus: it starts the services inside the created
container with the lower runtime's `exec`, in dependency order, answers the shim's `start` when
the gate opens, restarts services by policy, keeps their logs, and stops them in reverse order
whichever path ends the container. It is spawned by the shim at create, before the lower create
runs, and leaves nothing behind when it exits.
"""
