"""Which rules and services a container gets, and attaching them to its spec (the create path)."""
