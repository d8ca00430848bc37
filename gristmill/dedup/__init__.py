"""Dedup: exact copies, Bloom-filter line/paragraph dedup, MinHash-LSH near-duplicates, log-count resampling.

The Beam stages are in `gristmill.dedup.stages`; docs/dedup.md explains the choices and defaults.
"""
