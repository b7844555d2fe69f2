"""Benchmarks of the IOM partner gateway: `python -m bench [suite ...]` (see bench/__main__.py).

Every figure is a median of several rounds measured next to a baseline in the same run, so
the ratios mean something on a shared, noisy machine even when the absolute times wander.
Nothing here asserts a time: a missed target is reported as MISS, not raised.
"""
