"""Benchmarks of the real components: a bare model decode (`model`) and the live daemon end to end (`serve`)."""
