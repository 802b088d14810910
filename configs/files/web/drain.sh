#!/bin/sh
# web's drain hook ([stop] exec): runs inside the container before web gets its SIGTERM, as a
# proxy would stop taking new connections and finish the ones in flight.
echo "web: drain hook: refusing new requests, finishing those in flight"
sleep 0.3
echo "web: drain hook: done"
