"""Benchmarks of infogeo_jax against its peers (geomstats, optax, kfac-jax).

Run every benchmark with ``python -m benchmarks``; each ``bench_*.py`` module also runs alone.
Every benchmark checks correctness first, then times with ``jax.block_until_ready``, reporting
compile time separately. Speed is never asserted in the test suite.
"""
