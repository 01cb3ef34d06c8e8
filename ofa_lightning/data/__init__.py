"""WebDataset pipeline: shard lists, the mixed training stream, exactly-once evaluation, collate, DataModule.

raw shard sample --decode (samples.py)--> (json, PIL) --Task.build_example--> Example --collate.py--> batch dict

* ``shards``      shard specs (brace patterns, recipe folders + manifest, ``pipe:``, fsspec URLs), tar reading
* ``stream``      endless training stream, per-example task mixing, seeded by (seed, rank, worker, epoch, step)
* ``evaluation``  map-style eval dataset + padded distributed sampler, split-mode stream, ``dedup_by_id``
* ``mixture``     mixture config parsing and source sampling
* ``collate``     padding, images/masks, OFA's two pre-training groups; the batch keys are documented there
* ``datamodule``  ``OFADataModule`` and ``DataStatsCallback``
"""

# Lazy exports (PEP 562): importing one submodule (e.g. in a spawned DataLoader worker unpickling a dataset) does
# not drag in Lightning. The image transforms and JPEG decoding live in ``ofa_lightning.images`` (below ``tasks``).
_EXPORTS = {
    "OFADataModule": "datamodule",
    "DataStatsCallback": "datamodule",
    "MixtureStream": "stream",
    "StreamSource": "stream",
    "StreamLoader": "stream",
    "SharedPosition": "stream",
    "make_seed": "stream",
    "EvalDataset": "evaluation",
    "EvalCollate": "evaluation",
    "PaddedDistributedSampler": "evaluation",
    "ShardSplitStream": "evaluation",
    "dedup_by_id": "evaluation",
    "MixtureSource": "mixture",
    "parse_mixture": "mixture",
    "collate_examples": "collate",
    "collate_grouped": "collate",
    "iter_groups": "collate",
    "mark_padding": "collate",
    "DataStats": "samples",
    "Skip": "samples",
    "build_example": "samples",
    "decode_sample": "samples",
    "resolve_shards": "shards",
    "shard_sizes": "shards",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        value = getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
