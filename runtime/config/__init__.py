"""The administrator's configuration: settings and services read and checked, and their cache."""
