"""retinue's seccomp broker: NOTIFY rules merged into the container's profile, and the agent.

- `config`: the handler configuration (attrs) and its validation;
- `profile`: the pure merge of NOTIFY rules into `linux.seccomp`;
- `agent`: the agent (`serve()` for the supervisor, `python -m retinue.seccomp.agent` alone);
- `api`: the handler plugin API; `handlers`: the built-ins;
- `notify`: the kernel interface; `nshelper`: work inside a container's mount namespace.

How the pieces meet (the shim and the supervisor call these; see each module):

- configuration: `config.SeccompRule` tables, checked by `config.check_rules`, compiled to plain
  data by `config.compile_rules` (what the shim's cache stores);
- the shim, on create: `profile.apply(spec, rules, listener_path, profile.metadata(rules),
  notes)` (standard library only; `notes` gets what could not be done, for `plan`);
- the supervisor, before the lower create runs: `sock = agent.bind(listener_path)`, then
  `routes = agent.Routes.from_rules(rules, log)` and `await agent.serve(sock, routes, log)` in
  its TaskGroup; cancelling it closes every notify fd (the container's notified syscalls then
  fail with ENOSYS, never hang).
"""
