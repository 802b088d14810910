"""Service definitions that are wrong: `retinue check` and `create` say what, where and why.

Every message names the file, the key path and the offending value; a create with such a
configuration changes nothing (bundle, runc state, retinue state, processes).
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import Rig

OK_SCRIPT = "exec sleep 1000\n"


def check(rig: Rig) -> tuple[int, str]:
    r = rig.retinue("check")
    return r.returncode, r.stdout + r.stderr


def assert_reports(rig: Rig, *fragments: str) -> str:
    code, out = check(rig)
    assert code == 1, out
    for fragment in fragments:
        assert fragment in out, f"{fragment!r} not in:\n{out}"
    return out


def test_a_good_configuration_passes(rig: Rig) -> None:
    rig.service("db", OK_SCRIPT, '[ready]\ntcp = 5432\ntimeout = "1s"\n')
    rig.service("app", OK_SCRIPT, 'requires = ["db"]\nrequired = false\n')
    rig.policy('[[attach]]\nname = "all"\nwhen = { always = true }\nservices = ["db"]\n')
    code, out = check(rig)
    assert code == 0, out
    assert "db: required" in out and "app: optional; requires db" in out
    assert "services = db" not in out and "services db" in out
    assert out.rstrip().endswith("ok")


def test_cycle_is_named(rig: Rig) -> None:
    rig.service("a", OK_SCRIPT, 'requires = ["b"]\n')
    rig.service("b", OK_SCRIPT, 'after = ["c"]\n')
    rig.service("c", OK_SCRIPT, 'wants = ["a"]\n')
    rig.service("d", OK_SCRIPT, 'after = ["a"]\n')
    out = assert_reports(rig, "dependency cycle: a -> b -> c -> a")
    assert str(rig.etc / "services" / "a.toml") in out
    assert " d " not in out and "-> d" not in out  # d depends on the cycle but is not part of it


def test_self_dependency(rig: Rig) -> None:
    rig.service("a", OK_SCRIPT, 'after = ["a"]\n')
    assert_reports(rig, f"{rig.etc}/services/a.toml: after: service 'a' depends on itself")


@pytest.mark.parametrize("key", ["requires", "wants", "after"])
def test_unknown_dependency_names_both_ends(rig: Rig, key: str) -> None:
    rig.service("web", OK_SCRIPT, f'{key} = ["ghost"]\n')
    assert_reports(
        rig, f"{rig.etc}/services/web.toml: {key}: service 'web' depends on 'ghost', "
        "which is not defined",
    )


@pytest.mark.parametrize(
    ("toml", "key", "value"),
    [
        ('[ready]\ntimeout = "5 sec"\n', "ready.timeout", "'5 sec'"),
        ('[ready]\ninterval = "-1s"\n', "ready.interval", "'-1s'"),
        ('[restart]\ndelay = "1d"\n', "restart.delay", "'1d'"),
        ('[restart]\nmax_delay = ""\n', "restart.max_delay", "''"),
        ("[restart]\nreset_after = -3\n", "restart.reset_after", "-3"),
        ('[restart]\ninterval = "s"\n', "restart.interval", "'s'"),
        ('[stop]\ntimeout = "10"\n', "stop.timeout", "'10'"),
    ],
)
def test_bad_duration(rig: Rig, toml: str, key: str, value: str) -> None:
    rig.service("svc", OK_SCRIPT, toml)
    assert_reports(rig, f"{rig.etc}/services/svc.toml: {key}: expected a duration", value)


@pytest.mark.parametrize(
    "command",
    [
        '["/bin/sh", "-c", "echo hi"]',  # the container's own binaries
        '["/retinue/other/run.sh"]',  # another service's files
        '["../other/run.sh"]',  # climbing out of its own files
        '["/retinue/svc/../other/run.sh"]',
    ],
)
def test_command_outside_the_service_files(rig: Rig, command: str) -> None:
    rig.service("other", OK_SCRIPT)
    rig.service("svc", OK_SCRIPT, command=command)
    out = assert_reports(rig, f"{rig.etc}/services/svc.toml: command[0]:")
    first = command.split('"')[1]
    assert repr(first) in out, out


def test_command_missing_or_not_executable(rig: Rig) -> None:
    rig.service("svc", OK_SCRIPT, command='["nope.sh"]')
    rig.service("plain", OK_SCRIPT)
    (rig.files / "plain" / "run.sh").chmod(0o644)
    assert_reports(
        rig,
        f"{rig.etc}/services/svc.toml: command[0]: 'nope.sh': no such file in {rig.files}/svc",
        f"{rig.etc}/services/plain.toml: command[0]: 'run.sh': {rig.files}/plain/run.sh is not "
        "executable",
    )


def test_exec_probe_outside_the_service_files(rig: Rig) -> None:
    rig.service("svc", OK_SCRIPT, '[ready]\nexec = ["/bin/true"]\n')
    assert_reports(rig, f"{rig.etc}/services/svc.toml: ready.exec[0]:", "'/bin/true'")


def test_files_directory_missing(rig: Rig) -> None:
    rig.service("svc", None, files=str(rig.base / "nowhere"))
    assert_reports(
        rig, f"{rig.etc}/services/svc.toml: files: {rig.base}/nowhere: no such directory"
    )


@pytest.mark.parametrize(
    ("user", "shown"),
    [('"bob"', "a string: 'bob'"), ('"1000:staff"', "a string: '1000:staff'"),
     ("-1", "an integer: -1"), ('""', "a string: ''")],
)
def test_bad_user(rig: Rig, user: str, shown: str) -> None:
    rig.service("svc", OK_SCRIPT, f"user = {user}\n")
    assert_reports(rig, f"{rig.etc}/services/svc.toml: user: expected uid[:gid]", shown)


@pytest.mark.parametrize(
    ("cap", "index"),
    [("NET_ADMIN", 1), ("cap_net_admin", 1), ("CAP_NET_ADMNI", 1), ("CAP_", 1)],
)
def test_bad_capability_name(rig: Rig, cap: str, index: int) -> None:
    """A misspelt capability must fail the check: runc 1.1 only warns about an unknown name and
    runs the service without it."""
    rig.service("svc", OK_SCRIPT, f'capabilities = ["CAP_CHOWN", "{cap}"]\n')
    assert_reports(rig, f"{rig.etc}/services/svc.toml: capabilities[{index}]:", repr(cap))


def test_known_capabilities_pass(rig: Rig) -> None:
    rig.service("svc", OK_SCRIPT,
                'capabilities = ["CAP_NET_BIND_SERVICE", "CAP_SYS_PTRACE", "CAP_BPF", '
                '"CAP_CHECKPOINT_RESTORE"]\n')
    code, out = check(rig)
    assert code == 0, out


@pytest.mark.parametrize(
    ("toml", "key"),
    [
        ("restrat = 1\n", "restrat"),
        ("[ready]\ntcpp = 80\n", "ready.tcpp"),
        ('[stop]\nsignal = "SIGTERM"\ngrace = "1s"\n', "stop.grace"),
        ("[healthcheck]\nexec = []\n", "healthcheck"),
    ],
)
def test_unknown_key(rig: Rig, toml: str, key: str) -> None:
    rig.service("svc", OK_SCRIPT, toml)
    assert_reports(rig, f"{rig.etc}/services/svc.toml: {key}: unknown key")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('required = "yes"\n', "required: expected true or false, got a string: 'yes'"),
        ('requires = "db"\n', "requires: expected a list of strings, got a string: 'db'"),
        ("after = [1]\n", "after[0]: expected a string, got an integer: 1"),
        ('env = { A = 1 }\n', "env.A: expected a string, got an integer: 1"),
        ('[ready]\ntcp = "80"\n', "ready.tcp: expected an integer, got a string: '80'"),
        ('[restart]\nburst = 2.5\n', "restart.burst: expected an integer, got a number: 2.5"),
        ('ready = "tcp"\n', "ready: expected a table, got a string: 'tcp'"),
    ],
)
def test_wrong_type(rig: Rig, toml: str, message: str) -> None:
    rig.service("svc", OK_SCRIPT, toml)
    assert_reports(rig, f"{rig.etc}/services/svc.toml: {message}")


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('[restart]\npolicy = "sometimes"\n', "restart.policy: expected one of no, on-failure, "
         "always, got 'sometimes'"),
        ("[restart]\nburst = 0\n", "restart.burst: expected at least 1, got 0"),
        ('[stop]\nsignal = "TERM"\n',
         "stop.signal: expected a signal name like SIGTERM, got 'TERM'"),
        ("[ready]\ntcp = 70000\n", "ready.tcp: expected a port 1-65535, got 70000"),
        ('[ready]\ntcp = 80\nfile = "/x"\n', "ready: give at most one of tcp, exec, file, notify"),
        ('[ready]\nfile = "x"\n',
         "ready.file: expected an absolute path in the container, got 'x'"),
        ('working_dir = "tmp"\n', "working_dir: expected an absolute path, got 'tmp'"),
    ],
)
def test_bad_value(rig: Rig, toml: str, message: str) -> None:
    rig.service("svc", OK_SCRIPT, toml)
    assert_reports(rig, f"{rig.etc}/services/svc.toml: {message}")


NINES = "9" * 400


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        # What `retinue check` once let through, each of which broke at run time.
        ('[stop]\nsignal = "SIG_DFL"\n',
         "stop.signal: expected a signal name like SIGTERM, got 'SIG_DFL'"),
        ('[stop]\nsignal = "SIG_IGN"\n',
         "stop.signal: expected a signal name like SIGTERM, got 'SIG_IGN'"),
        ('[stop]\nsignal = "SIGRTMIN+40"\n',
         "stop.signal: expected a signal name like SIGTERM, got 'SIGRTMIN+40'"),
        ('[stop]\nsignal = "SIGSTOP"\n',
         "stop.signal: SIGSTOP cannot stop a service: it only suspends it"),
        ("[stop]\ntimeout = nan\n", "stop.timeout: expected a finite number, got a number: nan"),
        ("[ready]\ntimeout = inf\n", "ready.timeout: expected a finite number, got a number: inf"),
        ("[restart]\ndelay = -inf\n",
         "restart.delay: expected a finite number, got a number: -inf"),
        (f"[restart]\nburst = {NINES[:30]}\n",
         f"restart.burst: expected an integer that fits in 64 bits, got an integer: {NINES[:30]}"),
        ('env = { A = "x\\u0000y" }\n', "env.A: contains a NUL byte, got 'x\\x00y'"),
        ("user = 4294967296\n",
         "user: expected uid[:gid], 'root' or 'nobody', got an integer: 4294967296"),
        ("user = 4294967295\n",
         "user: expected uid[:gid], 'root' or 'nobody', got an integer: 4294967295"),
        ('user = "0:4294967296"\n',
         "user: expected uid[:gid], 'root' or 'nobody', got a string: '0:4294967296'"),
        ('user = "\u0661"\n',
         "user: expected uid[:gid], 'root' or 'nobody', got a string: '\u0661'"),
        ('working_dir = "/srv/../etc"\n', "working_dir: expected a normalized absolute path "
         "(no '..', '.' or '//'), got '/srv/../etc'"),
        ('working_dir = "/srv\\u0000"\n', "working_dir: contains a NUL byte, got '/srv\\x00'"),
        ('capabilities = ["CAP_CHOWN", "CAP_KILL", "CAP_CHOWN"]\n',
         "capabilities[2]: CAP_CHOWN is listed twice"),
        ('[ready]\nfile = "/tmp//ready"\n', "ready.file: expected a normalized absolute path "
         "(no '..', '.' or '//'), got '/tmp//ready'"),
        ('[ready]\ninterval = "0s"\n',
         "ready.interval: expected at least 1ms (the check runs this often), got a string: '0s'"),
    ],
)
def test_refused_before_run_time(rig: Rig, toml: str, message: str) -> None:
    rig.service("svc", OK_SCRIPT, toml)
    assert_reports(rig, f"{rig.etc}/services/svc.toml: {message}")


def test_nul_in_command_and_probe(rig: Rig) -> None:
    rig.service("svc", OK_SCRIPT, '[ready]\nexec = ["run.sh", "a\\u0000"]\n',
                command='["run.sh", "--x=\\u0000"]')
    assert_reports(
        rig, f"{rig.etc}/services/svc.toml: command[1]: contains a NUL byte, got '--x=\\x00'",
        f"{rig.etc}/services/svc.toml: ready.exec[1]: contains a NUL byte, got 'a\\x00'",
    )


@pytest.mark.parametrize(
    ("toml", "key", "value"),
    [
        ('[stop]\ntimeout = "1e400s"\n', "stop.timeout", "'1e400s'"),
        (f'[stop]\ntimeout = "{NINES}h"\n', "stop.timeout", NINES[:20]),
        ("[ready]\ntimeout = 1e300\n", "ready.timeout", "1e+300"),
        ('[restart]\nmax_delay = "8761h"\n', "restart.max_delay", "'8761h'"),
        ("[restart]\nreset_after = 31536001\n", "restart.reset_after", "31536001"),
    ],
)
def test_duration_out_of_range(rig: Rig, toml: str, key: str, value: str) -> None:
    rig.service("svc", OK_SCRIPT, toml)
    assert_reports(rig, f"{rig.etc}/services/svc.toml: {key}: expected a duration", value)


def test_the_longest_duration_and_sigkill_pass(rig: Rig) -> None:
    """SIGKILL is a legal stop signal (the service gets no grace: it is killed at once), and a
    duration of exactly a year is accepted."""
    rig.service("svc", OK_SCRIPT, '[stop]\nsignal = "SIGKILL"\ntimeout = "8760h"\n'
                '[ready]\ninterval = "1ms"\n')
    code, out = check(rig)
    assert code == 0, out


def test_an_integer_too_long_to_read(rig: Rig) -> None:
    rig.service("svc", OK_SCRIPT, f"[restart]\nburst = {'9' * 5000}\n")
    assert_reports(rig, f"{rig.etc}/services/svc.toml: invalid TOML: Exceeds the limit (4300 "
                   "digits) for integer string conversion")


def test_bad_service_file_name(rig: Rig) -> None:
    rig.service("Web", OK_SCRIPT)
    assert_reports(rig, f"{rig.etc}/services/Web.toml: (file name):", "'Web'")


def test_every_problem_is_reported_at_once(rig: Rig) -> None:
    rig.service("a", OK_SCRIPT, 'user = "bob"\n[ready]\ntimeout = "x"\n')
    rig.service("b", OK_SCRIPT, "bogus = true\n")
    assert_reports(rig, "a.toml: user:", "a.toml: ready.timeout:", "b.toml: bogus: unknown key")


def test_policy_naming_an_undefined_service(rig: Rig) -> None:
    rig.service("web", OK_SCRIPT)
    rig.policy('[[attach]]\nname = "base"\nwhen = { always = true }\nservices = ["web", "wbe"]\n')
    assert_reports(
        rig, f"{rig.etc}/policy.toml: attach[0].services[1]: no service 'wbe' in "
        f"{rig.etc}/services (defined: web)",
    )


def test_no_policy_file_means_no_rules(rig: Rig, container_id: str) -> None:
    """The default policy.toml may be missing: services are still chosen by the container; a
    policy file the configuration names must exist."""
    (rig.etc / "policy.toml").unlink()
    rig.service("web", OK_SCRIPT)
    code, out = check(rig)
    assert code == 0, out
    assert f"{rig.etc}/policy.toml (0 rules)" in out
    r = rig.create(container_id, rig.bundle(env=["RETINUE_SERVICES=web"]))
    assert r.returncode == 0, r.stderr
    assert rig.state(container_id) is not None
    assert rig.container_dir(container_id).is_dir()
    rig.write_config('policy = "site.toml"\n')
    assert_reports(rig, f"{rig.etc}/site.toml: no such file")


def test_relative_files_are_relative_to_the_config_directory(rig: Rig) -> None:
    rig.service("svc", OK_SCRIPT, files="../files/svc")
    assert_reports(rig, "files: expected a host directory without '..'")
    (rig.etc / "svcfiles").mkdir()
    (rig.etc / "svcfiles" / "run.sh").write_text("#!/bin/sh\n")
    (rig.etc / "svcfiles" / "run.sh").chmod(0o755)
    rig.service("svc", None, files="svcfiles")
    code, out = check(rig)
    assert code == 0, out


@pytest.mark.parametrize("log_format", ["json", "text"])
def test_create_with_a_broken_service_changes_nothing(
    rig: Rig, container_id: str, log_format: str
) -> None:
    rig.service("a", OK_SCRIPT, 'requires = ["b"]\n')
    rig.service("b", OK_SCRIPT, 'requires = ["a"]\n')
    bundle = rig.bundle(env=["RETINUE_SERVICES=a"])
    config = bundle / "config.json"
    before = (config.read_bytes(), os.stat(config).st_mtime_ns)
    r = rig.create(container_id, bundle, log_format=log_format)
    assert r.returncode == 1
    assert "dependency cycle: a -> b -> a" in r.stderr
    assert r.stdout == ""
    log = rig.runc_log.read_text()
    assert "level=error" in log or '"level": "error"' in log
    assert "dependency cycle: a -> b -> a" in log
    assert str(rig.etc / "services" / "a.toml") in log.replace("\\\\", "\\")
    if log_format == "json":
        assert len(rig.errors()) == 1
    assert (config.read_bytes(), os.stat(config).st_mtime_ns) == before
    assert rig.state(container_id) is None
    assert not rig.container_dir(container_id).exists()
    assert rig.leftovers() == []


def test_a_broken_configuration_is_not_cached(rig: Rig, container_id: str) -> None:
    """Fixing the file fixes the next create: the error was not remembered."""
    rig.service("web", OK_SCRIPT, '[ready]\ntimeout = "soon"\n')
    bundle = rig.bundle(env=["RETINUE_SERVICES=web"])
    assert rig.create(container_id, bundle).returncode == 1
    assert "ready.timeout" in rig.errors()[0]
    rig.service("web", OK_SCRIPT, '[ready]\ntimeout = "1s"\n')
    r = rig.create(container_id, bundle)
    assert r.returncode == 0, r.stderr
    assert rig.state(container_id) is not None
    assert Path(rig.container_dir(container_id)).is_dir()


# -- issue 10: one-shots, drain, health, fate sharing, exit-code rules ---------------------------


def test_the_new_keys_pass_and_are_shown(rig: Rig) -> None:
    rig.service("migrate", OK_SCRIPT, 'type = "oneshot"\n[ready]\ntimeout = "5m"\n')
    rig.service(
        "proxy",
        OK_SCRIPT,
        'on_failure = "stop-container"\nrequires = ["migrate"]\n'
        '[ready]\nhttp = "http://127.0.0.1:8080/ready"\n'
        '[health]\nhttp = "http://[::1]:8080/healthz?full=1"\ninterval = "5s"\ntimeout = "500ms"\n'
        "failures = 2\n"
        '[restart]\nsuccess_exit = [3, "SIGUSR1"]\nprevent_exit = [78]\n'
        '[stop]\nexec = ["run.sh", "drain"]\ntimeout = "20s"\n',
    )
    rig.service("agent", OK_SCRIPT, "[health]\ntcp = 9100\n")
    rig.service("probe", OK_SCRIPT, '[health]\nexec = ["run.sh", "ping"]\n'
                '[ready]\nhttp = "http://localhost/"\n')
    code, out = check(rig)
    assert code == 0, out
    assert "migrate: required, oneshot" in out
    assert "proxy: required, on failure stop-container, health http, drain; requires migrate" in out
    assert "agent: required, health tcp" in out


@pytest.mark.parametrize(
    ("toml", "message"),
    [
        ('type = "forking"\n', "type: expected one of simple, oneshot, got 'forking'"),
        ('on_failure = "restart"\n',
         "on_failure: expected one of ignore, stop-container, got 'restart'"),
        ('type = "oneshot"\n[ready]\ntcp = 80\n',
         "ready.tcp: a oneshot service is ready when it exits 0; remove the check"),
        ('type = "oneshot"\n[ready]\nnotify = true\n',
         "ready.notify: a oneshot service is ready when it exits 0; remove the check"),
        ('type = "oneshot"\n[health]\ntcp = 80\n',
         "health: a oneshot service runs to completion: it has no liveness probe"),
        ('type = "oneshot"\n[restart]\npolicy = "always"\n',
         "restart.policy: a oneshot service runs to completion: 'always' would run it again"),
        ('[ready]\nhttp = "https://127.0.0.1/"\n',
         "ready.http: expected a URL like http://127.0.0.1:8080/healthz (http only), "
         "got 'https://127.0.0.1/'"),
        ('[ready]\nhttp = "http://db.local:80/"\n',
         "ready.http: expected an IP address or localhost as the host (no name lookups in the "
         "container), got 'http://db.local:80/'"),
        ('[ready]\nhttp = "http://127.0.0.1:0/"\n',
         "ready.http: expected a port 1-65535, got 'http://127.0.0.1:0/'"),
        ('[ready]\nhttp = "http://127.0.0.1/a b"\n',
         "ready.http: expected a path of printable ASCII without spaces or '#', "
         "got 'http://127.0.0.1/a b'"),
        ('[ready]\nhttp = "http://u:p@127.0.0.1/"\n',
         "ready.http: expected no user name or password in the URL"),
        ('[ready]\ntcp = 80\nhttp = "http://127.0.0.1/"\n',
         "ready: give at most one of tcp, exec, file, notify, http; got tcp, http"),
        ("[health]\ninterval = \"5s\"\n", "health: give exactly one of exec, tcp, http; got none"),
        ('[health]\ntcp = 80\nhttp = "http://127.0.0.1/"\n',
         "health: give exactly one of exec, tcp, http; got tcp, http"),
        ("[health]\ntcp = 0\n", "health.tcp: expected a port 1-65535, got 0"),
        ('[health]\nhttp = "ftp://x/"\n', "health.http: expected a URL like"),
        ("[health]\ntcp = 80\nfailures = 0\n", "health.failures: expected at least 1, got 0"),
        ('[health]\ntcp = 80\ninterval = "1ms"\n',
         "health.interval: expected at least 100ms, got a string: '1ms'"),
        ('[health]\ntcp = 80\ntimeout = "soon"\n',
         "health.timeout: expected a duration like 30s, 100ms or 1m30s (at most 8760h), "
         "got a string: 'soon'"),
        ('[health]\nexec = ["/bin/true"]\n',
         "health.exec[0]: must be one of the service's own files, got '/bin/true'"),
        ("[health]\nexec = []\n", "health.exec: expected a non-empty command"),
        ('[stop]\nexec = ["/bin/sh", "-c", "sleep 1"]\n',
         "stop.exec[0]: must be one of the service's own files, got '/bin/sh'"),
        ('[stop]\nexec = ["../../bin/sh"]\n',
         "stop.exec[0]: must be a path inside the service's files, got '../../bin/sh'"),
        ('[stop]\nexec = ["run.sh", "a\\u0000"]\n', "stop.exec[1]: contains a NUL byte"),
        ("[restart]\nsuccess_exit = [256]\n",
         "restart.success_exit[0]: expected an exit code 0-255 or a signal name like SIGTERM, "
         "got an integer: 256"),
        ('[restart]\nprevent_exit = [1, "TERM"]\n',
         "restart.prevent_exit[1]: expected an exit code 0-255 or a signal name like SIGTERM, "
         "got a string: 'TERM'"),
        ("[restart]\nprevent_exit = [true]\n", "restart.prevent_exit[0]:"),
    ],
)
def test_new_keys_refused(rig: Rig, toml: str, message: str) -> None:
    rig.service("svc", OK_SCRIPT, toml)
    assert_reports(rig, f"{rig.etc}/services/svc.toml: {message}")
