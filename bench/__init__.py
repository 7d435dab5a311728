"""billhook's benchmarks, run by `make bench` (`python -m bench`); see docs/performance.md."""
