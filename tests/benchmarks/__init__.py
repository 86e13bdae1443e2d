"""The benchmark harness (benchmarks/) still runs."""
