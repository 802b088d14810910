"""The OCI spec as a lossless dict: reading the bundle, validating, and pure edits to it."""
