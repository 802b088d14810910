#!/bin/sh
# A tiny web server, as a stand-in for a service-mesh proxy or a log viewer.
mkdir -p /tmp/retinue-web
echo "served by the retinue demo service \"web\" (uid $(id -u))" > /tmp/retinue-web/index.html
echo "web: listening on :8080"
exec httpd -f -p 8080 -h /tmp/retinue-web
