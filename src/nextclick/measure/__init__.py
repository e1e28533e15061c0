"""Measurements beside the benchmarks: training speed, test curves, preparation speed."""
