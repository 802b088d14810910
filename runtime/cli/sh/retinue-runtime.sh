#!/bin/sh
# retinue-runtime: the pass-through fast path of retinue.cli.shim, written by retinue.cli.launcher from
# runtime/cli/sh/retinue-runtime.sh (its placeholders, between at signs, are filled in there; the flag
# tables come from retinue.argv, the paths from retinue.host.statedir and retinue.config.cache).
# Calls that cannot concern retinue go to the lower runtime from here (~1 ms); anything else,
# and anything this script is not sure of, goes to Python (retinue.cli.shim).
#
# `A && B || slow "$@"` is meant: slow when either test fails (slow execs, nothing follows it).
# lower, self, path, explicit, files and absent are set by the sourced cache (stage 3).
# shellcheck disable=SC2015,SC2154
slow() {
	@EXEC_PYTHON@
}

# A supervised container's calls that need no supervisor (engines call `state` often) go to
# the lower runtime it was created with, read from statedir.RECORDS with the `read` builtin:
# the root key is made as statedir.root_key makes it, for the roots that need no normalizing
# (one --root, absolute, no `%`, `//`, `.` or `..` component). start, kill and delete (the
# supervisor goes first), update (the services' sub-cgroups make room and follow), help, and
# anything unsure go to Python, which reads the entry.
registered() {
	case $cmd in state|exec|ps|events|pause|resume) ;; *) slow "$@" ;; esac
	for a do
		case $a in @HELP_FLAGS@) slow "$@" ;; esac
	done
	case $roots in '') root=/run/runc ;; .) ;; *) slow "$@" ;; esac
	case $root in /*) ;; *) slow "$@" ;; esac
	case $root in *%*|*//*|*/./*|*/../*|*/.|*/..) slow "$@" ;; esac
	rest=${root#/}; rest=${rest%/} key=''
	while :; do
		case $rest in
		'') key=${key:-%2F}; break ;;
		*/*) key=$key${rest%%/*}%2F; rest=${rest#*/} ;;
		*) key=$key$rest; break ;;
		esac
	done
	record=@RECORDS@/$key%$id
	[ -f @REGISTRY@/"$id/$key" ] && [ -f "$record" ] && [ -O "$record" ] || slow "$@"
	IFS= read -r lower <"$record" || slow "$@"
	case $lower in /*) ;; *) slow "$@" ;; esac
	[ -f "$lower" ] && [ -x "$lower" ] || slow "$@"
	exec "$lower" "$@"
}

# Stage 1, scan argv: the subcommand, the container id and --root, as argv.parse finds them.
cmd='' id='' skip='' root='' roots=''
for a do
	if [ -n "$skip" ]; then
		[ $skip = root ] && root=$a
		skip=''; continue
	fi
	if [ -z "$cmd" ]; then
		case $a in
		--root|-root) skip=root roots=$roots. ;;
		--root=*|-root=*) root=${a#*=} roots=$roots. ;;
		@GLOBAL_VALUE_FLAGS_BUT_ROOT@) skip=1 ;;
		-*) ;;
		*) cmd=$a ;;
		esac
	else
		# The id is the first argument that is not a flag or a flag's value: a supervised
		# container's call must never be taken for another's (argv.py has the same tables).
		case $a in
		--) case $cmd in create|run) break ;; *) slow "$@" ;; esac ;;  # create: stage 4
		-*=*) ;;
		-*)
			n=${a#-}
			case $cmd:${n#-} in @SUBCOMMAND_VALUE_FLAGS@) skip=1 ;; esac
			;;
		*) id=$a; break ;;
		esac
	fi
done

# Stage 2, registered: a container with a supervisor is in the registry whatever the
# configuration, and keeps the lower runtime it was created with.
case $id in ''|.|..|*/*) ;; *) [ -e @REGISTRY@/"$id" ] && registered "$@" ;; esac

# Stage 3, the configuration's cache (confcache.write_sh), used only while it is fresh. It sets
# lower, self, path, explicit, files, absent, and defines create_passes and fresh.
config=${RETINUE_CONFIG:-@DEFAULT_CONFIG@}
case $config in /*) ;; *) slow "$@" ;; esac
key='' rest=$config
while :; do
	case $rest in
	*/*) key=$key${rest%%/*}%; rest=${rest#*/} ;;
	*) key=$key$rest; break ;;
	esac
done
cache=@CACHE_DIR@/$key.sh
[ -f "$cache" ] || slow "$@"
# A cache an older version wrote has no `fresh`: its creates go to Python, which rewrites it.
fresh() { return 1; }
# shellcheck source=/dev/null
. "$cache"
[ "$self" = @SELF@ ] && [ "$path" = "$PATH" ] || slow "$@"
[ "$explicit" = "${RETINUE_CONFIG:+1}" ] || slow "$@"
for f in $files; do
	# -nt: dash, bash, busybox ash and mksh all have it.
	# shellcheck disable=SC3013
	[ -e "$f" ] && ! [ "$f" -nt "$cache" ] || slow "$@"
done
for f in $absent; do
	[ -e "$f" ] && slow "$@"
done

# Stage 4, create/run: most containers get nothing, and Python costs ~14 ms before it reads a
# byte. The cache's `create_passes` settles the spec from its text (confcache._create_passes);
# finding the bundle follows argv.parse: every create flag that takes a value, in any flag form,
# anywhere after the subcommand. Anything unusual (two bundle flags, an empty one, a missing
# value, a config.json that is a symlink or not there) goes to Python, which reports or decides.
# The policy decides here, so the cache must be exactly what Python would load: `fresh` compares
# every source file's full stat key (device, inode, size, mtime, ctime) with one exec of stat.
# The mtimes the other calls check are not enough for that: `cp -p`, `rsync -a` or `touch -d`
# deploy a new policy with an older mtime. Other calls need only the lower runtime's path.
case $cmd in
create|run)
	bundle='' seen='' value='' phase=global
	for a do
		if [ -n "$value" ]; then
			[ "$value" = bundle ] && bundle=$a
			value=''; continue
		fi
		case $phase/$a in
		*/--) [ $phase = global ] || break ;;
		@CREATE_GLOBAL_VALUE_FLAGS@) value=skip ;;
		global/-?*) ;;
		global/*) phase=sub ;;
		@CREATE_BUNDLE_FLAGS_WITH_VALUE@)
			seen=$seen. bundle=${a#*=} ;;
		@CREATE_BUNDLE_FLAGS@) seen=$seen. value=bundle ;;
		@CREATE_VALUE_FLAGS_BUT_BUNDLE@) value=skip ;;
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
exec "$lower" "$@"
