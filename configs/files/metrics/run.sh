#!/bin/sh
# A stand-in for a metrics agent: takes a moment to start, then writes its file every second.
echo "metrics: warming up"
sleep 1
n=0
while :; do
	n=$((n + 1))
	echo "demo_ticks_total $n" > /tmp/metrics.prom.tmp && mv /tmp/metrics.prom.tmp /tmp/metrics.prom
	sleep 1
done
