"""The OCI hook program, `retinue-hook STAGE CONTAINER_DIR`, run by the lower runtime."""
