#!/bin/sh
# A stand-in for a metrics agent: takes a moment to start, then writes its file every second.
# On SIGTERM it pushes its last sample (a moment's work) and exits: with retinue-init as the
# container's PID 1 it gets to do so after the main process has exited.
trap 'echo "metrics: SIGTERM, pushing the last sample ($n ticks)"; sleep 0.3; echo "metrics: bye"; exit 0' TERM
echo "metrics: warming up"
sleep 1
n=0
while :; do
	n=$((n + 1))
	echo "demo_ticks_total $n" > /tmp/metrics.prom.tmp && mv /tmp/metrics.prom.tmp /tmp/metrics.prom
	sleep 1 & wait $!
done
