"""netspy-tui benchmarks: ``python -m bench.run`` (see bench/README.md). Not part of the product."""
