#!/bin/sh
# retinue-hook, written by retinue.cli.launcher from runtime/cli/sh/retinue-hook.sh. Without a
# supervisor (no state directory) there is nothing to tell: answer at once instead of starting
# Python. runc writes the OCI state to our stdin; read it all so that runc never meets a closed
# pipe (with the `read` builtin: exec cat costs more than the few hundred bytes it reads).
if [ $# -eq 2 ] && [ ! -e "$2" ]; then
	case $1 in
	createRuntime|poststart|poststop)
		while read -r _; do :; done
		exit 0
		;;
	esac
fi
@EXEC_PYTHON@
