"""Truncated or partly unreadable shards in the training stream: every sample before the damage is used, as evenly
as any other shard's, and a source with one good shard among damaged ones trains (the size in sizes.json still says
the whole shard, so a visit can draw its start past the cut)."""

from __future__ import annotations

import collections
from pathlib import Path

import pytest
from test_data_pipeline import FakeTask, write_shards

from ofa_lightning.data.samples import DataStats
from ofa_lightning.data.shards import iter_tar_samples
from ofa_lightning.data.stream import MixtureStream, StreamSource, _readable_count


def _truncate(url: str, fraction: float) -> int:
    """Cut the shard inside a member at ``fraction`` of its bytes; returns how many samples stay readable."""
    path = Path(url)
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction) + 7])  # +7: never on a 512-byte block boundary
    readable = 0
    try:
        for _ in iter_tar_samples(url):
            readable += 1
    except Exception:  # noqa: BLE001 - the cut
        pass
    return readable


def test_readable_count_from_the_parts_of_a_visit():
    assert _readable_count([(0, 7, True)]) == 7  # read from the start: the damage after 7
    assert _readable_count([(20, 0, True), (0, 9, True)]) == 9  # start past the cut, the wrap-around stops at 9
    assert _readable_count([(4, 5, True), (0, 4, False)]) == 9  # start before the cut


def test_a_truncated_shard_gives_all_its_readable_samples_evenly(tmp_path):
    (url,) = write_shards(tmp_path / "s", "t", [30], image=False)
    readable = _truncate(url, 0.4)
    assert 3 < readable < 30
    stream = MixtureStream(
        [StreamSource("s", FakeTask(), [url], sizes=[30])], 1, seed=5, shuffle_buffer=1, segment_batches=None
    )
    stats = DataStats()
    seen = collections.Counter()
    visits = 12
    for _, batch in zip(range(readable * visits), stream.batches()):
        stats.update(batch["stats"])
        seen.update(batch["ids"])
    assert sorted(seen) == [f"t-{n:05d}" for n in range(readable)]  # every readable sample, nothing else
    assert max(seen.values()) - min(seen.values()) <= 1  # each visit gives each readable sample once
    assert stats.skipped["unreadable shard"] >= visits - 1


def test_one_good_shard_among_truncated_ones_trains_for_every_seed(tmp_path):
    urls = write_shards(tmp_path / "m", "m", [20, 20, 20], image=False)
    assert _truncate(urls[0], 0.2) > 0
    assert _truncate(urls[2], 0.05) == 0  # nothing readable
    skipped = 0
    for seed in range(100):
        stream = MixtureStream(
            [StreamSource("m", FakeTask(), urls, sizes=[20, 20, 20])],
            2,
            seed=seed,
            shuffle_buffer=4,
            segment_batches=8,
        )
        stats = DataStats()
        for _, batch in zip(range(24), stream.batches(num_workers=1)):  # 3 segments, 48 samples
            stats.update(batch["stats"])
            assert len(batch["ids"]) == 2
        assert stats.num_examples == 48, seed
        skipped += stats.skipped.get("unreadable shard", 0)
    assert skipped >= 100  # the damaged shards were visited (and counted), and never stopped the source


def test_a_source_whose_shards_all_give_nothing_stops_with_a_message(tmp_path):
    urls = write_shards(tmp_path / "z", "z", [10, 10], image=False)
    for url in urls:
        _truncate(url, 0.01)
    stream = MixtureStream([StreamSource("z", FakeTask(), urls, sizes=[10, 10])], 2, seed=0)
    with pytest.raises(RuntimeError, match="'z': none of its 2 shard"):
        next(stream.batches())


def test_a_garbled_member_header_is_an_unreadable_shard_not_a_shorter_one(tmp_path):
    """tarfile stops without an error at a header it cannot parse: the reader checks for the end-of-archive
    marker there, so the damage is a counted skip and the samples before it are kept."""
    import os
    import tarfile

    from ofa_lightning.data.shards import ShardReadError, index_tar

    (url,) = write_shards(tmp_path / "g", "g", [12], image=False)
    with tarfile.open(url) as tar:
        at = [m.offset for m in tar.getmembers()][6]
    data = bytearray(Path(url).read_bytes())
    data[at : at + tarfile.BLOCKSIZE] = os.urandom(tarfile.BLOCKSIZE)
    Path(url).write_bytes(bytes(data))
    got = []
    with pytest.raises(ShardReadError, match="unreadable after"):
        for sample in iter_tar_samples(url):
            got.append(sample["__key__"])
    assert got == [f"g-{n:05d}" for n in range(len(got))] and 3 <= len(got) < 12
    index = index_tar(url, partial=True)
    assert index.damage and index.keys == got
