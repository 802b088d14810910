#!/bin/sh
# A tiny web server, as a stand-in for a service-mesh proxy or a log viewer. Its site was
# written by the one-shot "setup", which web requires.
echo "web: listening on :8080"
httpd -f -p 8080 -h /tmp/retinue-web &
pid=$!
# Stopped after metrics (which requires it), after its drain hook has run.
trap 'echo "web: SIGTERM"; kill $pid; wait $pid; echo "web: bye"; exit 0' TERM
wait $pid
