"""Writes the launchers for the hot entry points, `retinue-runtime` and `retinue-hook`.

Every runtime call of every container comes through `retinue-runtime`, and runc runs
`retinue-hook` two or three times per edited container. CPython needs ~10 ms to start here, runc
~5 ms: a Python process on every call would triple the cost of a pass-through. So both launchers
are small POSIX sh scripts (dash starts in ~1 ms) that settle the common case themselves and
start Python for everything else:

- `retinue-runtime` hands a call straight to the lower runtime when it cannot concern retinue:
  any subcommand but create and run about a container without a supervisor (no entry in
  statedir.REGISTRY; a supervised container's calls go to the runtime it was created with).
  It decides only from the cache that Python wrote (`confcache.write_sh`), and only while no file
  the configuration was read from is newer than that cache; a create or run only while every
  such file has the very stat key (device, inode, size, mtime, ctime) Python saw. In every other
  case it runs `retinue.shim`, which decides the same things at full length.
- `retinue-hook` answers at once when the container has no supervisor (no state directory).

Python itself runs with `-I -S` and only the package's own site-packages on sys.path: pip's
console scripts would also process every .pth file and import `re` (~8 ms).

    python -m retinue.launcher --bin-dir /usr/local/bin
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import sysconfig

from . import argv as runc_argv
from . import confcache, statedir


def _python(python: str, site_packages: str, self_path: str, code: str) -> str:
    """The exec of Python with argv[0] set to the launcher, as a sh command line."""
    def literal(text: str) -> str:
        return f'"{text}"' if not set(text) & set("\"'\\$`") else repr(text)

    program = (
        f"import sys; sys.argv[0] = {literal(self_path)}; "
        f"sys.path.insert(0, {literal(site_packages)}); {code}"
    )
    return f'exec {shlex.quote(python)} -IS -c {shlex.quote(program)} "$@"'


def _value_flags() -> str:
    """sh case patterns `subcommand:flag` for the flags that take a value, of the subcommands
    about an existing container (argv.py's tables: one truth for both parsers)."""
    return "|".join(
        f"{command}:{flag}"
        for command, flags in sorted(runc_argv.SUBCOMMAND_VALUE_FLAGS.items())
        if command not in ("create", "run", "restore", "spec", "list")
        for flag in sorted(flags)
    )


# create/run (issue 12): most containers get nothing, and Python costs ~14 ms before it reads a
# byte. The cache's `create_passes` settles the spec from its text (confcache._create_passes);
# finding the bundle follows argv.parse: every create flag that takes a value, in any flag form,
# anywhere after the subcommand. Anything unusual (two bundle flags, an empty one, a missing
# value, a config.json that is a symlink or not there) goes to Python, which reports or decides.
# The policy decides here, so the cache must be exactly what Python would load: `fresh` compares
# every source file's full stat key (device, inode, size, mtime, ctime) with one exec of stat.
# The mtimes the other calls check are not enough for that: `cp -p`, `rsync -a` or `touch -d`
# deploy a new policy with an older mtime. Other calls need only the lower runtime's path.
_CREATE_BLOCK = """\
case $cmd in
create|run)
	bundle= seen= value= phase=global
	for a do
		if [ -n "$value" ]; then
			[ "$value" = bundle ] && bundle=$a
			value=; continue
		fi
		case $phase/$a in
		*/--) [ $phase = global ] || break ;;
		global/--root|global/-root|global/--log|global/-log) value=skip ;;
		global/--log-format|global/-log-format|global/--criu|global/-criu) value=skip ;;
		global/--rootless|global/-rootless) value=skip ;;
		global/-?*) ;;
		global/*) phase=sub ;;
		sub/--bundle=*|sub/-bundle=*|sub/--b=*|sub/-b=*)
			seen=$seen. bundle=${a#*=} ;;
		sub/--bundle|sub/-bundle|sub/--b|sub/-b) seen=$seen. value=bundle ;;
		sub/--console-socket|sub/-console-socket|sub/--pid-file|sub/-pid-file) value=skip ;;
		sub/--preserve-fds|sub/-preserve-fds|sub/--pidfd-socket|sub/-pidfd-socket) value=skip ;;
		esac
	done
	[ -z "$value" ] || slow "$@"
	case $seen in
	'') bundle=. ;;
	.) [ -n "$bundle" ] || slow "$@" ;;
	*) slow "$@" ;;
	esac
	[ -f "$bundle/config.json" ] && ! [ -L "$bundle/config.json" ] || slow "$@"
	fresh || slow "$@"
	create_passes "$bundle/config.json" && exec "$lower" "$@"
	slow "$@"
	;;
esac
"""


# A supervised container's calls that need no supervisor (engines call `state` often) go to
# the lower runtime it was created with, read from statedir.RECORDS with the `read` builtin:
# the root key is made as statedir.root_key makes it, for the roots that need no normalizing
# (one --root, absolute, no `%`, `//`, `.` or `..` component). start, kill and delete (the
# supervisor goes first), update (the services' sub-cgroups make room and follow), help, and
# anything unsure go to Python, which reads the entry.
_REGISTERED = f"""\
registered() {{
	case $cmd in state|exec|ps|events|pause|resume) ;; *) slow "$@" ;; esac
	for a do
		case $a in -h|--h|-help|--help|-h=*|--h=*|-help=*|--help=*) slow "$@" ;; esac
	done
	case $roots in '') root=/run/runc ;; .) ;; *) slow "$@" ;; esac
	case $root in /*) ;; *) slow "$@" ;; esac
	case $root in *%*|*//*|*/./*|*/../*|*/.|*/..) slow "$@" ;; esac
	rest=${{root#/}}; rest=${{rest%/}} key=
	while :; do
		case $rest in
		'') key=${{key:-%2F}}; break ;;
		*/*) key=$key${{rest%%/*}}%2F; rest=${{rest#*/}} ;;
		*) key=$key$rest; break ;;
		esac
	done
	record={statedir.RECORDS}/$key%$id
	[ -f {statedir.REGISTRY}/"$id/$key" ] && [ -f "$record" ] && [ -O "$record" ] || slow "$@"
	IFS= read -r lower <"$record" || slow "$@"
	case $lower in /*) ;; *) slow "$@" ;; esac
	[ -f "$lower" ] && [ -x "$lower" ] || slow "$@"
	exec "$lower" "$@"
}}
"""


def render_runtime(python: str, site_packages: str, self_path: str) -> str:
    slow = _python(python, site_packages, self_path, "from retinue.shim import main; main()")
    return f"""#!/bin/sh
# retinue-runtime: the pass-through fast path of retinue.shim, written by retinue.launcher.
# Calls that cannot concern retinue go to the lower runtime from here (~1 ms); anything else,
# and anything this script is not sure of, goes to Python (retinue.shim).
slow() {{
	{slow}
}}
{_REGISTERED}cmd= id= skip= root= roots=
for a do
	if [ -n "$skip" ]; then
		[ $skip = root ] && root=$a
		skip=; continue
	fi
	if [ -z "$cmd" ]; then
		case $a in
		--root|-root) skip=root roots=$roots. ;;
		--root=*|-root=*) root=${{a#*=}} roots=$roots. ;;
		--log|-log|--log-format|-log-format) skip=1 ;;
		--criu|-criu|--rootless|-rootless) skip=1 ;;
		-*) ;;
		*) cmd=$a ;;
		esac
	else
		# The id is the first argument that is not a flag or a flag's value: a supervised
		# container's call must never be taken for another's (argv.py has the same tables).
		case $a in
		--) case $cmd in create|run) break ;; *) slow "$@" ;; esac ;;  # create: _CREATE_BLOCK
		-*=*) ;;
		-*)
			n=${{a#-}}
			case $cmd:${{n#-}} in {_value_flags()}) skip=1 ;; esac
			;;
		*) id=$a; break ;;
		esac
	fi
done
# A container with a supervisor is in the registry whatever the configuration, and keeps the
# lower runtime it was created with.
case $id in ''|.|..|*/*) ;; *) [ -e {statedir.REGISTRY}/"$id" ] && registered "$@" ;; esac
config=${{RETINUE_CONFIG:-{confcache.DEFAULT_CONFIG}}}
case $config in /*) ;; *) slow "$@" ;; esac
key= rest=$config
while :; do
	case $rest in
	*/*) key=$key${{rest%%/*}}%; rest=${{rest#*/}} ;;
	*) key=$key$rest; break ;;
	esac
done
cache={confcache.CACHE_DIR}/$key.sh
[ -f "$cache" ] || slow "$@"
# A cache an older version wrote has no `fresh`: its creates go to Python, which rewrites it.
fresh() {{ return 1; }}
. "$cache"
[ "$self" = {shlex.quote(self_path)} ] && [ "$path" = "$PATH" ] || slow "$@"
[ "$explicit" = "${{RETINUE_CONFIG:+1}}" ] || slow "$@"
for f in $files; do
	[ -e "$f" ] && ! [ "$f" -nt "$cache" ] || slow "$@"
done
for f in $absent; do
	[ -e "$f" ] && slow "$@"
done
{_CREATE_BLOCK}exec "$lower" "$@"
"""


def render_hook(python: str, site_packages: str, self_path: str) -> str:
    run = _python(
        python, site_packages, self_path,
        "from retinue.hooks.hook import main; sys.exit(main())",
    )
    return f"""#!/bin/sh
# retinue-hook, written by retinue.launcher. Without a supervisor (no state directory) there is
# nothing to tell: answer at once instead of starting Python. runc writes the OCI state to our
# stdin; read it all so that runc never meets a closed pipe (with the `read` builtin: exec cat
# costs more than the few hundred bytes it reads).
if [ $# -eq 2 ] && [ ! -e "$2" ]; then
	case $1 in
	createRuntime|poststart|poststop)
		while read -r _; do :; done
		exit 0
		;;
	esac
fi
{run}
"""


def _install(target: str, text: str) -> None:
    tmp = f"{target}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        f.write(text)
    os.chmod(tmp, 0o755)
    os.replace(tmp, target)


def write(bin_dir: str, python: str, site_packages: str) -> list[str]:
    os.makedirs(bin_dir, exist_ok=True)
    bin_dir = os.path.abspath(bin_dir)
    runtime = os.path.join(bin_dir, "retinue-runtime")
    hook = os.path.join(bin_dir, "retinue-hook")
    _install(runtime, render_runtime(python, site_packages, runtime))
    _install(hook, render_hook(python, site_packages, hook))
    written = [runtime, hook]
    admin = os.path.join(bin_dir, "retinue")
    source = os.path.join(os.path.dirname(python), "retinue")
    if os.path.abspath(admin) != os.path.abspath(source):
        if os.path.lexists(admin):
            os.unlink(admin)
        os.symlink(source, admin)
        written.append(admin)
    return written


def warm_supervisor(python: str, site_packages: str) -> None:
    """Import what a supervisor imports, with its flags, so that the optimized .pyc files it
    needs exist (as root, where they are written) before the first create waits for one."""
    import subprocess

    from .supervisor import spawn

    code = spawn.supervisor_code(site_packages).replace("; main()", "")
    subprocess.run([python, *spawn.PYTHON_FLAGS, "-c", code], check=False, timeout=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--bin-dir", required=True)
    ns = parser.parse_args()
    python = os.path.join(sys.prefix, "bin", "python3")
    for path in write(ns.bin_dir, python, sysconfig.get_paths()["purelib"]):
        print(path)
    warm_supervisor(python, sysconfig.get_paths()["purelib"])


if __name__ == "__main__":
    main()
