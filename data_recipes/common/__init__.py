"""Shared machinery for the recipes: sample types, input checks, safe readers, atomic shard writing, the run driver.

A recipe only knows its raw format: it yields `Candidate`s (a key, where it came from, and a function that
builds the `Sample` or raises `BadSample`). Everything else (shuffling, skipping, sharding, resuming, the
manifest) lives here, so every recipe behaves the same way on bad input and on re-runs.
"""

from data_recipes.common.errors import BadSample, PrepareError
from data_recipes.common.sample import Candidate, Sample, make_key

__all__ = ["BadSample", "PrepareError", "Candidate", "Sample", "make_key"]
