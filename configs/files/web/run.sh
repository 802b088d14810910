#!/bin/sh
# A tiny web server, as a stand-in for a service-mesh proxy or a log viewer.
mkdir -p /tmp/retinue-web
echo "served by the retinue demo service \"web\" (uid $(id -u))" > /tmp/retinue-web/index.html
echo "web: listening on :8080"
httpd -f -p 8080 -h /tmp/retinue-web &
pid=$!
# Stopped after metrics (which requires it): it drains, then exits.
trap 'echo "web: SIGTERM, draining"; sleep 0.2; kill $pid; wait $pid; echo "web: bye"; exit 0' TERM
wait $pid
