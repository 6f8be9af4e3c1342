"""The `qflow` command line."""
