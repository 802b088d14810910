#!/bin/sh
# A one-shot task, as a stand-in for a secrets fetcher or a schema migration: it runs to
# completion before web (which requires it) and the entrypoint start.
echo "setup: writing the site web serves"
mkdir -p /tmp/retinue-web
echo "served by the retinue demo service \"web\", set up by the one-shot \"setup\"" \
	> /tmp/retinue-web/index.html
chmod -R a+rX /tmp/retinue-web
echo "setup: done"
