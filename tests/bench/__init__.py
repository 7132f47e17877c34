"""Benchmarks (``make bench``): each module here has ``main() -> dict`` of figures.

``python -m tests.bench [name …]`` runs them (all by default), writes
``bench-results.json`` and rewrites each module's section of ``BENCHMARKS.md``.
Figures are medians over repeated runs where a run is short; machines here are
noisy (2 shared cores), so compare ratios, not single numbers.
"""
