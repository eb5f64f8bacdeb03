"""Load benchmark of operator-service: `python -m bench --help` (see bench/README.md)."""
