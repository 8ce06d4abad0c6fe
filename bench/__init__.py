"""The streaming benchmark: ``make bench`` or ``python -m bench.run`` (see bench/README.md)."""
