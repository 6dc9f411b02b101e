"""olsmooth's benchmarks, run from the repository root as modules: `python -m benchmarks.NAME` (see docs/benchmarks/)."""
