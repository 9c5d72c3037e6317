"""Executors that run a plan's regions elsewhere than in this process (Dask)."""
