"""ofa_lightning.data: shard lists, the mixed training stream, evaluation splitting, collate, the DataModule.

Tiny WebDataset shards are written on the fly (webdataset.TarWriter); tasks are small test doubles (the real
tasks are tested elsewhere). The shared helpers here are also used by tests/test_data_ddp.py.
"""

from __future__ import annotations

import collections
import io
import json
import os
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import webdataset as wds
from PIL import Image

from ofa_lightning.data import (
    DataStats,
    EvalDataset,
    MixtureStream,
    OFADataModule,
    PaddedDistributedSampler,
    ShardSplitStream,
    StreamLoader,
    StreamSource,
    collate_examples,
    collate_grouped,
    dedup_by_id,
    iter_groups,
    mark_padding,
    parse_mixture,
    resolve_shards,
    shard_sizes,
)
from ofa_lightning.data.evaluation import EvalCollate
from ofa_lightning.data.shards import iter_tar_samples
from ofa_lightning.data.stream import SharedPosition, make_seed
from ofa_lightning.tasks.base import Example, Task

REPO = Path(__file__).resolve().parents[1]
PAD = 1


# ----------------------------------------------------------------------------------------------------------------
# helpers (shared with test_data_ddp.py)
# ----------------------------------------------------------------------------------------------------------------
def png_bytes(value: int, size: int = 8) -> bytes:
    img = Image.new("RGB", (size, size), (value % 256, (value * 7) % 256, (value * 13) % 256))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def write_shards(
    folder: Path,
    prefix: str,
    sizes: list[int],
    *,
    split: str = "train",
    image: bool = True,
    corrupt: dict | None = None,
    sizes_json: bool = True,
) -> list[str]:
    """Writes shards ``{split}-{i:06d}.tar`` with ``sizes[i]`` samples each; keys ``{prefix}-{n:05d}``.

    ``corrupt`` maps a global sample number to one of "image" (garbage image bytes), "json" (invalid json),
    "nojson" (no json member), "reject" (task returns None), "keyerror" (task raises KeyError).
    """
    folder.mkdir(parents=True, exist_ok=True)
    corrupt = corrupt or {}
    urls, n, table = [], 0, {}
    for i, count in enumerate(sizes):
        path = folder / f"{split}-{i:06d}.tar"
        with wds.TarWriter(str(path)) as sink:
            for _ in range(count):
                key = f"{prefix}-{n:05d}"
                fields = {"id": key, "source": prefix, "split": split, "n": n}
                kind = corrupt.get(n)
                if kind == "reject":
                    fields["reject"] = True
                if kind == "keyerror":
                    del fields["n"]
                sample = {"__key__": key}
                if kind == "json":
                    sample["json"] = b"{not json"
                elif kind != "nojson":
                    sample["json"] = json.dumps(fields).encode()
                if image:
                    sample["png"] = b"\x89PNG garbage" if kind == "image" else png_bytes(n)
                elif kind == "nojson":
                    sample["txt"] = b"orphan"
                sink.write(sample)
                n += 1
        urls.append(str(path))
        table[path.name] = count
    if sizes_json:
        existing = json.loads((folder / "sizes.json").read_text()) if (folder / "sizes.json").exists() else {}
        (folder / "sizes.json").write_text(json.dumps({**existing, **table}))
    return urls


def image_tensor(image: Image.Image, size: int = 8) -> torch.Tensor:
    arr = np.asarray(image.resize((size, size)), dtype=np.uint8).copy()
    return torch.from_numpy(arr).permute(2, 0, 1).float() / 255.0


class FakeTask(Task):
    """Test double: tokens derived from the sample number; images resized to 8x8."""

    name = "fake"
    group = "image-text"

    def __init__(self, name: str = "fake", group: str = "image-text", image_size: int = 8, **options):
        super().__init__(None, **options)
        self.name, self.group, self.image_size = name, group, image_size

    def build_example(self, sample, image, train, rng):
        if sample.get("reject"):
            return None
        n = int(sample["n"])  # KeyError on a malformed sample
        target = [10 + n % 7] * (1 + n % 3) + [2]
        return Example(
            id=str(sample["id"]),
            task=self.name,
            source=[0] + [4 + n % 50] * (1 + n % 5) + [2],
            prev_output=[0] + target[:-1],
            target=target,
            image=None if image is None else image_tensor(image, self.image_size),
            weight=1.0 + (n % 2),
            meta={"n": n},
        )


class FieldsTask(FakeTask):
    """Test double for real recipe shards: tokens from the json's length (any schema)."""

    def build_example(self, sample, image, train, rng):
        n = len(json.dumps(sample, sort_keys=True))
        target = [10 + n % 7] * (1 + n % 3) + [2]
        return Example(
            id=str(sample["id"]),
            task=self.name,
            source=[0, 4 + n % 50, 2],
            prev_output=[0] + target[:-1],
            target=target,
            image=None if image is None else image_tensor(image, self.image_size),
        )


def stream_ids(stream: MixtureStream, n_batches: int, **where) -> list[str]:
    ids = []
    for i, batch in enumerate(stream.batches(**where)):
        if i >= n_batches:
            break
        ids.extend(batch["ids"])
    return ids


@pytest.fixture()
def three_sources(tmp_path):
    a = write_shards(tmp_path / "a", "a", [40, 40, 40])
    b = write_shards(tmp_path / "b", "b", [30, 30], corrupt={5: "image", 17: "reject"})
    c = write_shards(tmp_path / "c", "c", [25], image=False)
    return [
        StreamSource("a", FakeTask("cap"), a, 0.5),
        StreamSource("b", FakeTask("vqa"), b, 0.3),
        StreamSource("c", FakeTask("txt", group="text"), c, 0.2),
    ]


# ----------------------------------------------------------------------------------------------------------------
# shard specs
# ----------------------------------------------------------------------------------------------------------------
def test_resolve_shards_forms(tmp_path):
    urls = write_shards(tmp_path / "d", "x", [3, 4, 5])
    write_shards(tmp_path / "d", "y", [2], split="val")
    assert resolve_shards(str(tmp_path / "d" / "train-{000000..000002}.tar")) == urls
    assert resolve_shards(str(tmp_path / "d"), split="train") == urls  # folder + sizes.json
    assert resolve_shards(str(tmp_path / "d"), split="val") == [str(tmp_path / "d" / "val-000000.tar")]
    assert resolve_shards(str(tmp_path / "d" / "train-*.tar")) == urls
    assert resolve_shards([urls[2], urls[0]]) == [urls[2], urls[0]]
    with pytest.raises(FileNotFoundError, match=r"train-000003.tar \(and 6 more\)"):
        resolve_shards(str(tmp_path / "d" / "train-{000000..000009}.tar"))
    with pytest.raises(ValueError, match="give the split"):
        resolve_shards(str(tmp_path / "d"))
    pipes = resolve_shards(f"pipe:cat {tmp_path}/d/train-{{000000..000001}}.tar")
    assert pipes == [f"pipe:cat {urls[0]}", f"pipe:cat {urls[1]}"]
    assert [s["__key__"] for s in iter_tar_samples(pipes[1])] == [f"x-{i:05d}" for i in range(3, 7)]
    assert shard_sizes(urls) == dict(zip(urls, [3, 4, 5]))
    os.remove(tmp_path / "d" / "sizes.json")  # no manifest: counted from the tar headers
    assert shard_sizes(urls + pipes[:1]) == {**dict(zip(urls, [3, 4, 5])), pipes[0]: 3}
    assert resolve_shards(f"file://{urls[0]}") == [urls[0]]


def test_fsspec_urls_stream_index_and_manifest(tmp_path):
    """Remote shards through fsspec (its in-memory filesystem stands in for s3:// / gs://)."""
    import fsspec

    urls = write_shards(tmp_path / "m", "m", [3, 2])
    fs = fsspec.filesystem("memory")
    for name in ("train-000000.tar", "train-000001.tar", "sizes.json"):
        fs.pipe(f"/bucket/m/{name}", (tmp_path / "m" / name).read_bytes())
    remote = resolve_shards("memory://bucket/m/", split="train")
    assert remote == ["memory://bucket/m/train-000000.tar", "memory://bucket/m/train-000001.tar"]
    assert resolve_shards("memory://bucket/m/train-{000000..000001}.tar") == remote
    assert shard_sizes(remote) == dict(zip(remote, [3, 2]))
    assert [s["__key__"] for u in remote for s in iter_tar_samples(u)] == [f"m-{n:05d}" for n in range(5)]
    dataset = EvalDataset("m", FakeTask(), remote)  # random access by offset over fsspec
    assert [dataset[i].id for i in (4, 0, 3)] == ["m-00004", "m-00000", "m-00003"]
    assert len(urls) == 2


def test_resolve_shards_recipe_manifest(tmp_path):
    folder = tmp_path / "rec"
    write_shards(folder, "r", [2, 2], sizes_json=False)
    (folder / "manifest.json").write_text(
        json.dumps({"format": 1, "splits": {"train": {"shards": [{"file": "train-000001.tar", "num_samples": 2}]}}})
    )
    assert resolve_shards(str(folder), "train") == [str(folder / "train-000001.tar")]  # the manifest decides
    with pytest.raises(FileNotFoundError, match="no split 'val'"):
        resolve_shards(str(folder), "val")


def test_failing_pipe_is_an_unreadable_shard(tmp_path):
    from ofa_lightning.data.shards import ShardReadError

    with pytest.raises(ShardReadError):
        list(iter_tar_samples("pipe:exit 3"))


# ----------------------------------------------------------------------------------------------------------------
# mixture
# ----------------------------------------------------------------------------------------------------------------
def test_parse_mixture_forms_and_errors():
    as_map = parse_mixture(
        {
            "cap": {"task": "caption", "shards": "x", "ratio": 2},
            "vqa": {"shards": ["y", "z"], "options": {"k": 1}},
            "dropped": None,
        }
    )
    assert [(s.name, s.task, s.ratio) for s in as_map] == [("cap", "caption", 2.0), ("vqa", "vqa", 1.0)]
    assert as_map[1].options == {"k": 1} and as_map[1].split == "train"
    as_list = parse_mixture([{"task": "caption", "shards": "x", "ratio": 0.5, "eval_split": None}])
    assert as_list[0].name == "caption" and as_list[0].resolved_eval_split("val") is None
    assert as_map[0].resolved_eval_split("val") == "val"
    with pytest.raises(ValueError, match="unknown keys"):
        parse_mixture({"a": {"shards": "x", "ratoi": 1}})
    with pytest.raises(ValueError, match="ratio"):
        parse_mixture({"a": {"shards": "x", "ratio": 0}})
    with pytest.raises(ValueError, match="unique"):
        parse_mixture([{"task": "a", "shards": "x"}, {"task": "a", "shards": "y"}])
    with pytest.raises(ValueError, match="no shards"):
        parse_mixture({"a": {"task": "a"}})


def test_options_only_mixture_entry_is_ignored_and_logged(caplog):
    """experiment=demo sets mixture.vqa.options; with mixture=caption_only that entry has no task and no shards: an
    info line (a preset tuning a source the chosen mixture lacks is the usual case, not a fault)."""
    with caplog.at_level("INFO", logger="ofa_lightning.data.mixture"):
        got = parse_mixture(
            {
                "caption": {"task": "caption", "shards": "x"},
                "vqa": {"options": {"candidates": "a"}},
                "grounding": {"ratio": 0.4},
            }
        )
    assert [s.name for s in got] == ["caption"]
    assert "'vqa' only sets options/ratio" in caplog.text and "'grounding' only sets" in caplog.text


def test_realised_mixture_ratios_within_3_percent(three_sources):
    """10k examples: realised shares within +-3 % (absolute) of 0.5/0.3/0.2, skips in source b notwithstanding."""
    stream = MixtureStream(three_sources, 50, seed=1, shuffle_buffer=20)
    stats, from_batches = DataStats(), collections.Counter()
    for i, batch in enumerate(stream.batches()):
        if i == 200:
            break
        stats.update(batch["stats"])
        from_batches.update(batch["tasks"])
    assert stats.num_examples == 10_000
    shares = stats.mix_fractions()
    for name, want in (("a", 0.5), ("b", 0.3), ("c", 0.2)):
        assert abs(shares[name] - want) < 0.03, shares
    assert from_batches == {"cap": stats.mix["a"], "vqa": stats.mix["b"], "txt": stats.mix["c"]}
    # source b re-reads its 2 bad samples on every pass: counted, never silent
    assert stats.skipped.get("corrupt image", 0) > 0 and stats.skipped.get("vqa: rejected", 0) > 0
    logged = stats.log_dict("data/train/")
    assert logged["data/train/mix/a"] == pytest.approx(shares["a"])
    assert logged["data/train/skipped/corrupt_image"] == stats.skipped["corrupt image"]


def test_streams_differ_across_ranks_and_workers_and_are_reproducible(three_sources):
    stream = MixtureStream(three_sources, 8, seed=7, shuffle_buffer=16)
    where = [dict(rank=r, worker=w, num_workers=2) for r in range(2) for w in range(2)]
    runs = [stream_ids(stream, 6, **kw) for kw in where]
    assert len({tuple(r) for r in runs}) == 4, "every (rank, worker) stream must differ"
    for kw, ids in zip(where, runs):
        assert stream_ids(stream, 6, **kw) == ids, "same (seed, rank, worker, step) must give the same stream"
    again = MixtureStream(three_sources, 8, seed=7, shuffle_buffer=16)  # a fresh object (e.g. after restart)
    assert stream_ids(again, 6, rank=1, worker=1, num_workers=2) == runs[3]
    resumed = stream_ids(stream, 6, rank=0, worker=0, num_workers=2, skip=1234)
    assert resumed != runs[0]
    assert stream_ids(again, 6, rank=0, worker=0, num_workers=2, skip=1234) == resumed
    assert stream_ids(stream, 6, rank=0, worker=0, num_workers=2, epoch=1) != runs[0]
    assert (
        stream_ids(MixtureStream(three_sources, 8, seed=8, shuffle_buffer=16), 6, rank=0, worker=0, num_workers=2)
        != runs[0]
    )
    assert make_seed(1, 2, 3) == make_seed(1, 2, 3) != make_seed(1, 2, 4)


def test_shuffle_buffer_and_resampling_cover_all_shards(tmp_path):
    urls = write_shards(tmp_path / "s", "s", [10] * 5)
    stream = MixtureStream([StreamSource("s", FakeTask(), urls)], 10, seed=0, shuffle_buffer=30)
    ids = stream_ids(stream, 30)
    shards_seen = {int(i.split("-")[1]) // 10 for i in ids}
    assert shards_seen == set(range(5))
    first = [int(i.split("-")[1]) for i in ids[:10]]
    assert first != sorted(first), "the shuffle buffer must reorder samples"


def test_short_segments_cover_whole_shards(tmp_path):
    """Each segment restarts its readers; with shard sizes known, a shard visit starts at a random sample and wraps
    around (every sample once), so segments much shorter than a shard still reach its end."""
    urls = write_shards(tmp_path / "s", "s", [200], image=False)
    numbers = lambda ids: [int(i.split("-")[1]) for i in ids]  # noqa: E731

    def firsts(sizes):  # the first sample of each of 12 segments of 2 batches x 4 (shuffle buffer off)
        stream = MixtureStream(
            [StreamSource("s", FakeTask(), urls, sizes=sizes)], 4, seed=0, shuffle_buffer=1, segment_batches=2
        )
        ids = numbers(stream_ids(stream, 24))
        return ids, [ids[k] for k in range(0, len(ids), 8)]

    old_ids, old_firsts = firsts(None)  # size unknown: every segment reads the shard from its start
    assert set(old_firsts) == {0} and max(old_ids) < 8
    ids, starts = firsts([200])
    assert len(set(starts)) >= 10, starts  # segments start all over the shard ...
    assert max(ids) > 150 and len(set(ids)) > 60
    for k in range(0, len(ids), 8):  # ... and read on from there, wrapping from the shard's end to its start
        assert ids[k : k + 8] == [(ids[k] + j) % 200 for j in range(8)]
    one_visit = MixtureStream([StreamSource("s", FakeTask(), urls, sizes=[200])], 10, seed=3, shuffle_buffer=1)
    assert sorted(numbers(stream_ids(one_visit, 20))) == list(range(200))  # one rotated visit: each sample once
    datamodule_sizes = write_shards(tmp_path / "t", "t", [7, 5], image=False)
    from ofa_lightning.data.shards import shard_sizes

    assert [shard_sizes(datamodule_sizes, count_missing=False)[u] for u in datamodule_sizes] == [7, 5]


def test_iter_tar_samples_start_stop(tmp_path):
    from ofa_lightning.data.shards import iter_tar_samples

    (url,) = write_shards(tmp_path / "s", "s", [12])
    keys = [r["__key__"] for r in iter_tar_samples(url)]
    assert len(keys) == 12
    part = list(iter_tar_samples(url, 3, 7))
    assert [r["__key__"] for r in part] == keys[3:7] and all("png" in r and "json" in r for r in part)
    assert [r["__key__"] for r in iter_tar_samples(url, 10)] == keys[10:]
    assert list(iter_tar_samples(url, 0, 0)) == [] and list(iter_tar_samples(url, 12)) == []


# ----------------------------------------------------------------------------------------------------------------
# bad data: counted, never silent
# ----------------------------------------------------------------------------------------------------------------
BAD = {1: "image", 3: "json", 4: "nojson", 6: "reject", 8: "keyerror"}
BAD_REASONS = {"corrupt image": 1, "bad json": 1, "missing json": 1, "fake: rejected": 1, "fake: KeyError": 1}


def test_bad_samples_are_counted_skips_in_eval(tmp_path):
    urls = write_shards(tmp_path / "bad", "k", [6, 6], corrupt=BAD)
    dataset = EvalDataset("bad", FakeTask(), urls)
    assert len(dataset) == 12
    loader = torch.utils.data.DataLoader(dataset, batch_size=5, collate_fn=EvalCollate("bad", PAD))
    stats, ids = DataStats(), []
    for batch in loader:
        stats.update(batch["stats"])
        ids += batch["ids"]
        assert batch["source"] == "bad"
    assert stats.skipped == BAD_REASONS
    assert len(ids) == 12 - len(BAD) and stats.mix == {"bad": len(ids)}
    assert set(ids).isdisjoint({f"k-{n:05d}" for n in BAD})


def test_bad_samples_and_broken_shards_are_counted_skips_in_training(tmp_path):
    urls = write_shards(tmp_path / "bad", "k", [6, 6], corrupt=BAD)
    broken = tmp_path / "bad" / "train-000002.tar"
    data = Path(urls[0]).read_bytes()
    broken.write_bytes(data[: len(data) // 2 + 100])  # truncated mid-member
    stream = MixtureStream([StreamSource("bad", FakeTask(), urls + [str(broken)])], 4, seed=0, shuffle_buffer=1)
    stats = DataStats()
    for i, batch in enumerate(stream.batches()):
        stats.update(batch["stats"])
        assert not {f"k-{n:05d}" for n in BAD} & set(batch["ids"])
        if i == 40:
            break
    assert set(stats.skipped) == set(BAD_REASONS) | {"unreadable shard"}
    assert stats.num_examples == 41 * 4


def test_source_with_only_bad_samples_fails_with_a_message(tmp_path):
    urls = write_shards(tmp_path / "allbad", "z", [4], corrupt={i: "image" for i in range(4)})
    stream = MixtureStream([StreamSource("allbad", FakeTask(), urls)], 2, max_consecutive_skips=50)
    with pytest.raises(RuntimeError, match="allbad.*skipped"):
        next(stream.batches())


# ----------------------------------------------------------------------------------------------------------------
# collate
# ----------------------------------------------------------------------------------------------------------------
def _ex(i, n_src, n_tgt, image=True, task="t", size=8, code=False, weight=1.0):
    tgt = list(range(10, 10 + n_tgt))
    return Example(
        id=f"e{i}",
        task=task,
        source=[0] + [5] * n_src + [2],
        prev_output=[0] + tgt[:-1],
        target=tgt,
        image=torch.full((3, size, size), float(i + 1)) if image else None,
        code_mask=code,
        weight=weight,
        constraint="trie" if code else None,
        meta={"i": i},
    )


def test_collate_shapes_padding_and_masks():
    examples = [_ex(0, 3, 2), _ex(1, 1, 5, image=False, code=True, weight=2.0), _ex(2, 6, 1)]
    batch = collate_examples(examples, pad_id=PAD)
    assert batch["input_ids"].shape == (3, 8) and batch["input_ids"].dtype == torch.long
    assert batch["input_ids"][1].tolist() == [0, 5, 2] + [PAD] * 5
    assert batch["src_lengths"].tolist() == [5, 3, 8]
    assert batch["prev_output_tokens"].shape == batch["target"].shape == (3, 5)
    assert batch["target"][0].tolist() == [10, 11, PAD, PAD, PAD]
    assert batch["prev_output_tokens"][2].tolist() == [0, PAD, PAD, PAD, PAD]
    assert batch["ntokens"] == 2 + 5 + 1
    assert batch["patch_images"].shape == (3, 3, 8, 8)
    assert batch["patch_masks"].tolist() == [True, False, True]
    assert torch.all(batch["patch_images"][1] == 0) and torch.all(batch["patch_images"][2] == 3)
    assert batch["code_masks"].tolist() == [False, True, False]
    assert batch["weights"].tolist() == [1.0, 2.0, 1.0]
    assert batch["is_pad"].tolist() == [False] * 3
    assert batch["ids"] == ["e0", "e1", "e2"] and batch["tasks"] == ["t"] * 3
    assert batch["constraints"] == [None, "trie", None] and batch["metas"][2] == {"i": 2}
    assert batch["size"] == 3

    text_only = collate_examples([_ex(0, 1, 1, image=False)], pad_id=PAD)
    assert text_only["patch_images"] is None and text_only["patch_masks"].tolist() == [False]
    dummy = collate_examples([_ex(0, 1, 1, image=False)], pad_id=PAD, text_image_size=16)
    assert dummy["patch_images"].shape == (1, 3, 16, 16) and float(dummy["patch_images"].abs().sum()) == 0

    padded = collate_examples([_ex(0, 1, 2), mark_padding(_ex(1, 1, 3))], pad_id=PAD)
    assert padded["is_pad"].tolist() == [False, True] and padded["ntokens"] == 2

    with pytest.raises(ValueError, match="share a size"):
        collate_examples([_ex(0, 1, 1, size=8, task="cap"), _ex(1, 1, 1, size=16, task="ground")])
    bad = _ex(0, 1, 2)
    bad.target = bad.target[:1]
    with pytest.raises(ValueError, match="align"):
        collate_examples([bad])


def test_collate_normalises_pending_images_into_the_batch():
    """Loader-built examples carry PendingImage pixels; collating them (mixed with float and text-only rows) gives
    the batch the float examples give, to the bit. samples.build_example defers; the task called directly does not."""
    from ofa_lightning.data.samples import build_example, decode_sample
    from ofa_lightning.images import PendingImage, image_tensor
    from ofa_lightning.tasks.caption import CaptionTask
    from ofa_lightning.tokenizer import OFATokenizer

    tokenizer = OFATokenizer.train_bpe(["a red square", "two blue dogs"], bpe_vocab_size=300, min_frequency=1)
    task = CaptionTask(tokenizer, image_size=24)
    rng = np.random.RandomState(0)
    raws = []
    for i in range(2):
        buf = io.BytesIO()
        Image.fromarray((rng.rand(30, 40, 3) * 255).astype(np.uint8)).save(buf, "PNG")
        raws.append(
            {
                "__key__": f"k{i}",
                "json": json.dumps({"id": f"c{i}", "captions": ["a red square"]}).encode(),
                "png": buf.getvalue(),
            }
        )
    import random as _random

    loaded = [build_example(task, raw, train=False, rng=_random.Random(i)) for i, raw in enumerate(raws)]
    direct = [task.build_example(*decode_sample(raw), False, _random.Random(i)) for i, raw in enumerate(raws)]
    assert all(isinstance(ex.image, PendingImage) for ex in loaded)
    assert all(isinstance(ex.image, torch.Tensor) for ex in direct)
    assert all(torch.equal(image_tensor(a.image), b.image) for a, b in zip(loaded, direct))
    text = _ex(5, 1, 1, image=False)
    for rows_a, rows_b in (
        ([loaded[0], direct[1]], direct),
        ([loaded[0], text, loaded[1]], [direct[0], text, direct[1]]),
    ):
        a = collate_examples(rows_a, pad_id=PAD)["patch_images"]
        b = collate_examples(rows_b, pad_id=PAD)["patch_images"]
        assert a.dtype == torch.float32 and torch.equal(a, b)


class _CollateInWorker(torch.utils.data.Dataset):
    def __len__(self):
        return 1

    def __getitem__(self, i):
        batch = collate_examples([_ex(0, 3, 2), _ex(1, 1, 5, image=False)], pad_id=PAD)
        return batch["patch_images"].is_shared(), batch["patch_images"]


def test_collate_allocates_images_in_shared_memory_in_workers():
    """In a DataLoader worker the batch's images are made in shared memory (sending them copies nothing), with the
    same values as in-process; in the main process they are ordinary tensors."""
    local = collate_examples([_ex(0, 3, 2), _ex(1, 1, 5, image=False)], pad_id=PAD)["patch_images"]
    assert not local.is_shared()
    ((shared_in_worker, images),) = torch.utils.data.DataLoader(_CollateInWorker(), batch_size=None, num_workers=1)
    assert bool(shared_in_worker)
    assert torch.equal(images, local) and torch.all(images[1] == 0)


def test_collate_grouped_into_ofa_pretraining_groups():
    examples = [
        _ex(0, 2, 2, size=8),
        _ex(1, 3, 2, image=False, task="text"),
        _ex(2, 1, 1, size=8),
        _ex(3, 1, 4, size=16, task="det"),
    ]
    batch = collate_grouped(examples, ["image-text", "text", "image-text", "detection"], pad_id=PAD)
    assert batch["size"] == 4 and set(batch["groups"]) == {"image-text", "other"}
    v1, v2 = batch["groups"]["image-text"], batch["groups"]["other"]
    assert v1["ids"] == ["e0", "e2"] and v1["sample_patches"] is True and v1["patch_images"].shape == (2, 3, 8, 8)
    assert v2["ids"] == ["e1", "e3"] and v2["sample_patches"] is False
    assert v2["patch_images"].shape == (2, 3, 16, 16) and v2["patch_masks"].tolist() == [False, True]
    assert [name for name, _ in iter_groups(batch)] == ["image-text", "other"]
    only_text = collate_grouped([_ex(0, 1, 1, image=False)], ["text"], pad_id=PAD)
    assert list(only_text["groups"]) == ["other"]
    assert [name for name, _ in iter_groups(collate_examples(examples[:1]))] == ["all"]


def test_grouped_stream_batches(three_sources):
    stream = MixtureStream(three_sources, 16, seed=3, shuffle_buffer=8, group_batches=True)
    batch = next(iter(stream.batches()))
    groups = batch["groups"]
    assert sum(g["size"] for g in groups.values()) == 16 == batch["size"]
    assert set(groups["other"]["tasks"]) == {"txt"} and set(groups["image-text"]["tasks"]) <= {"cap", "vqa"}
    assert sum(batch["stats"]["mix"].values()) == 16


def test_bucketing_groups_similar_lengths(three_sources):
    def mean_padding(bucket_factor):
        stream = MixtureStream(three_sources, 8, seed=5, shuffle_buffer=8, bucket_factor=bucket_factor)
        waste = []
        for i, batch in enumerate(stream.batches()):
            if i == 40:
                break
            cells = batch["input_ids"].numel() + batch["prev_output_tokens"].numel()
            pads = int((batch["input_ids"] == PAD).sum() + (batch["prev_output_tokens"] == PAD).sum())
            waste.append(pads / cells)
        return sum(waste) / len(waste)

    assert mean_padding(8) < 0.5 * mean_padding(0)


# ----------------------------------------------------------------------------------------------------------------
# epochs, workers, the shared position
# ----------------------------------------------------------------------------------------------------------------
def test_dataloader_two_workers_persistent_epochs(three_sources):
    """num_workers=2 + persistent workers: exact epoch length, both workers used, a new stream per epoch (P7)."""
    position = SharedPosition()
    stream = MixtureStream(
        three_sources,
        4,
        seed=11,
        shuffle_buffer=8,
        batches_per_epoch=5,
        position=position,
        rank=0,
        world_size=1,
        num_workers=2,
    )
    state = {"epoch": 0, "step": 0}
    loader = StreamLoader(
        stream,
        batch_size=None,
        num_workers=2,
        persistent_workers=True,
        position_fn=lambda: (state["epoch"], state["step"]),
    )
    assert len(loader) == 6  # ceil(5 / 2) batches per worker x 2 workers
    epochs = []
    for epoch in range(2):
        state.update(epoch=epoch, step=0)
        batches = list(loader)
        assert len(batches) == len(loader)
        assert all(b["input_ids"].shape[0] == 4 for b in batches)
        epochs.append([b["ids"] for b in batches])
        stats = DataStats()
        for b in batches:
            stats.update(b["stats"])
        assert stats.num_examples == 24
    assert epochs[0] != epochs[1], "persistent workers must see the new epoch"
    # worker w's stream is the in-process stream of (rank 0, worker w) at the same position
    expected = [b["ids"] for b in stream.batches(rank=0, worker=1, num_workers=2, epoch=1)]
    assert epochs[1][1::2] == expected


def test_endless_stream_has_no_len(three_sources):
    stream = MixtureStream(three_sources, 4, batches_per_epoch=None)
    with pytest.raises(TypeError):
        len(stream)
    assert sum(1 for _, _ in zip(range(30), stream)) == 30


@pytest.mark.parametrize("context", ["spawn"])
def test_shared_position_reaches_spawned_workers(three_sources, context):
    position = SharedPosition(context)
    stream = MixtureStream(
        three_sources[:1], 2, seed=2, shuffle_buffer=4, batches_per_epoch=2, position=position, rank=0, num_workers=1
    )
    loader = StreamLoader(
        stream,
        batch_size=None,
        num_workers=1,
        persistent_workers=True,
        multiprocessing_context=context,
        position_fn=lambda: (3, 1),
    )
    got = [b["ids"] for b in loader]
    assert len(got) == 1 and got == [b["ids"] for b in stream.batches(rank=0, worker=0, num_workers=1, epoch=3, skip=1)]


# ----------------------------------------------------------------------------------------------------------------
# evaluation: exactly once, never hang
# ----------------------------------------------------------------------------------------------------------------
def test_padded_distributed_sampler_covers_each_item_once():
    class Seven(torch.utils.data.Dataset):
        def __len__(self):
            return 7

    per_rank = [list(PaddedDistributedSampler(Seven(), 3, r)) for r in range(3)]
    assert [len(p) for p in per_rank] == [3, 3, 3]
    real = [i for p in per_rank for i in p if not isinstance(i, tuple)]
    assert sorted(real) == list(range(7))
    assert [i for p in per_rank for i in p if isinstance(i, tuple)] == [(0, True), (1, True)]
    with pytest.raises(ValueError, match="empty"):
        PaddedDistributedSampler(torch.utils.data.TensorDataset(torch.zeros(0)), 2, 0)


def _split_run(urls, world, workers, batch_size=4, sizes=None):
    per_rank = []
    for rank in range(world):
        ds = ShardSplitStream(
            "s", FakeTask(), urls, batch_size, rank=rank, world_size=world, num_workers=workers, sizes=sizes
        )
        loader = torch.utils.data.DataLoader(ds, batch_size=None, num_workers=workers)
        batches = list(loader)
        assert len(batches) == len(ds) == len(loader)
        per_rank.append(batches)
    return per_rank


@pytest.mark.parametrize("workers", [0, 2])
def test_split_mode_uneven_shards_equal_batches_exactly_once(tmp_path, workers):
    urls = write_shards(tmp_path / "u", "u", [9, 2, 5, 1, 7], corrupt={3: "image"})
    per_rank = _split_run(urls, 2, workers)
    assert len(per_rank[0]) == len(per_rank[1]), "every rank must run the same number of batches"
    real = [i for batches in per_rank for b in batches for i, pad in zip(b["ids"], b["is_pad"].tolist()) if not pad]
    assert sorted(real) == sorted(f"u-{n:05d}" for n in range(24) if n != 3)
    stats = DataStats()
    for batches in per_rank:
        for b in batches:
            stats.update(b["stats"])
    assert stats.skipped == {"corrupt image": 1} and stats.mix == {"s": 23} and stats.padded > 0


def test_split_mode_rank_without_shard_fails_fast_everywhere(tmp_path):
    urls = write_shards(tmp_path / "few", "f", [3, 3])
    for rank in range(3):  # every rank raises at construction: nobody waits for anybody
        start = time.monotonic()
        with pytest.raises(ValueError, match=r"2 shard\(s\) for 3 ranks.*rank\(s\) \[2\] would get no shard"):
            ShardSplitStream("few", FakeTask(), urls, 2, rank=rank, world_size=3)
        assert time.monotonic() - start < 5


def test_eval_dataset_map_mode_and_max_samples(tmp_path):
    urls = write_shards(tmp_path / "e", "e", [5, 3])
    full = EvalDataset("e", FakeTask(), urls)
    assert [full[i].id for i in range(len(full))] == [f"e-{n:05d}" for n in range(8)]
    assert full[(2, True)].meta["is_pad"] is True and full[2].meta.get("is_pad") is None
    assert len(EvalDataset("e", FakeTask(), urls, max_samples=4)) == 4
    loader = torch.utils.data.DataLoader(full, batch_size=3, num_workers=2, collate_fn=EvalCollate("e", PAD))
    assert sorted(i for b in loader for i in b["ids"]) == [f"e-{n:05d}" for n in range(8)]
    with pytest.raises(ValueError, match="pipe"):
        EvalDataset("e", FakeTask(), [f"pipe:cat {urls[0]}"])


def test_dedup_by_id():
    records = [
        {"id": "a", "p": 1},
        {"id": "b", "p": 2},
        {"id": "a", "p": 3},
        {"id": "c", "p": 4, "is_pad": True},
        {"id": "b", "p": 5, "is_pad": True},
    ]
    assert dedup_by_id(records) == [{"id": "a", "p": 1}, {"id": "b", "p": 2}]
    assert dedup_by_id([("x", 1), ("x", 2), ("y", 3)], key=lambda r: r[0], is_pad=None) == [("x", 1), ("y", 3)]


# ----------------------------------------------------------------------------------------------------------------
# DataModule from the real Hydra configs, on the real shapes shards
# ----------------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    from data_recipes.shapes_pipeline import build_shapes_shards

    root = tmp_path_factory.mktemp("data")
    build_shapes_shards(root / "shapes", num_images=30, seed=0)
    return root


def _compose(overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=str(REPO / "conf"), version_base="1.3"):
        return compose(config_name=None, overrides=overrides)


@pytest.mark.parametrize("mixture", ["caption_vqa_grounding", "caption_only", "vqa_only", "grounding_only"])
def test_every_mixture_config_composes(mixture, shapes_root):
    cfg = _compose(["+data=shapes", f"+mixture={mixture}", f"+paths.data_dir={shapes_root}"])
    sources = parse_mixture(cfg.mixture)
    assert abs(sum(s.ratio for s in sources) - 1.0) < 1e-9
    for s in sources:  # every shard spec resolves on the shapes shards
        assert resolve_shards(os.path.join(cfg.data.shards_root, s.shards), s.split)


def test_datamodule_from_hydra_config(shapes_root):
    from hydra.utils import instantiate

    cfg = _compose(
        [
            "+data=shapes",
            "+mixture=caption_vqa_grounding",
            f"+paths.data_dir={shapes_root}",
            "data.num_workers=0",
            "data.micro_batch_size=6",
            "data.batches_per_epoch=3",
            "data.eval.num_workers=0",
        ]
    )
    tasks = {name: FieldsTask(name) for name in ("caption", "vqa", "grounding")}
    dm = instantiate(cfg.data, tasks=tasks, _recursive_=False)
    assert isinstance(dm, OFADataModule) and dm.micro_batch_size == 6 and dm.shuffle_buffer == 64
    dm.setup("fit")
    assert dm.val_names == ["caption", "vqa", "grounding"]
    loader = dm.train_dataloader()
    batches = list(loader)
    assert len(batches) == len(loader) == 3
    for source in dm.train_dataset.sources:  # shard sizes from the manifests: rotated shard reads
        assert source.sizes is not None and len(source.sizes) == len(source.urls)
        assert all(isinstance(n, int) and n > 0 for n in source.sizes)
    seen = collections.Counter(t for b in batches for t in b["tasks"])
    assert set(seen) <= {"caption", "vqa", "grounding"} and sum(seen.values()) == 18
    assert batches[0]["patch_images"].shape[1:] == (3, 8, 8)
    dm.set_position(1, 0)
    assert [b["ids"] for b in dm.train_dataloader()] != [b["ids"] for b in batches]
    sizes = {}
    for name, val in zip(dm.val_names, dm.val_dataloader()):
        ids = [i for b in val for i in b["ids"]]
        assert len(ids) == len(set(ids))
        sizes[name] = len(ids)
    manifest = {
        n: json.loads((shapes_root / "shapes" / "shards" / r / "manifest.json").read_text())
        for n, r in (("caption", "coco_caption"), ("vqa", "vqav2"), ("grounding", "refcoco"))
    }
    assert sizes == {n: m["splits"]["val"]["num_samples"] for n, m in manifest.items()}
    dm.setup("test")
    assert dm.test_names == ["caption", "vqa", "grounding"] and len(dm.test_dataloader()) == 3
    assert dm.state_dict()["seed"] == 0


def test_datamodule_rejects_bad_settings(tmp_path):
    mixture = {"a": {"task": "fake", "shards": "x"}}
    with pytest.raises(ValueError, match="micro_batch_size"):
        OFADataModule(mixture, micro_batch_size=0)
    with pytest.raises(ValueError, match="unknown eval settings"):
        OFADataModule(mixture, eval={"splitt": "val"})
    with pytest.raises(ValueError, match="eval.mode"):
        OFADataModule(mixture, eval={"mode": "random"})
    dm = OFADataModule({"a": {"task": "fake", "shards": "nowhere"}}, shards_root=str(tmp_path), tasks={"a": FakeTask()})
    with pytest.raises(FileNotFoundError, match="nowhere"):
        dm.setup("fit")
    with pytest.raises(ValueError, match="no tokenizer"):
        OFADataModule({"a": {"task": "caption", "shards": "x"}}).setup("fit")


# ----------------------------------------------------------------------------------------------------------------
# with a Lightning Trainer (CPU, one process)
# ----------------------------------------------------------------------------------------------------------------
class RecordingModule(__import__("pytorch_lightning").LightningModule):
    """Tiny module that records what the loaders gave it."""

    def __init__(self):
        super().__init__()
        self.layer = torch.nn.Linear(1, 1)
        self.train_ids: list[list[str]] = []
        self.val_ids: list[tuple[int, list[str], list[bool]]] = []

    def training_step(self, batch, batch_idx):
        self.train_ids.append(list(batch["ids"]))
        return self.layer(batch["weights"].unsqueeze(1).float()).sum()

    def validation_step(self, batch, batch_idx, dataloader_idx=0):
        self.val_ids.append((dataloader_idx, list(batch["ids"]), batch["is_pad"].tolist()))

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def test_trainer_fit_two_epochs_with_workers(tmp_path):
    import pytorch_lightning as pl

    from ofa_lightning.data import DataStatsCallback

    write_shards(tmp_path / "cap", "c", [12, 12])
    write_shards(tmp_path / "cap", "cv", [5], split="val")
    write_shards(tmp_path / "txt", "t", [12], image=False)
    write_shards(tmp_path / "txt", "tv", [4], split="val", image=False)
    dm = OFADataModule(
        {"cap": {"task": "cap", "shards": "cap", "ratio": 3}, "txt": {"task": "txt", "shards": "txt", "ratio": 1}},
        micro_batch_size=4,
        num_workers=2,
        shuffle_buffer=4,
        batches_per_epoch=4,
        shards_root=str(tmp_path),
        text_image_size=8,
        eval={"num_workers": 0},
        tasks={"cap": FakeTask("cap"), "txt": FakeTask("txt", group="text")},
    )
    module, stats_cb = RecordingModule(), DataStatsCallback(log_every_n_steps=1)
    trainer = pl.Trainer(
        accelerator="cpu",
        devices=1,
        max_epochs=2,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[stats_cb],
        num_sanity_val_steps=0,
    )
    trainer.fit(module, datamodule=dm)
    assert trainer.global_step == 8 and len(module.train_ids) == 8
    assert module.train_ids[:4] != module.train_ids[4:]
    assert stats_cb.train.num_examples == 32 and set(stats_cb.train.mix) == {"cap", "txt"}
    assert "data/train/mix/cap" in trainer.logged_metrics
    # epoch 1 restarted every worker: the stream is the pure function of (seed, rank, epoch, batch index)
    stream = dm.train_dataset
    expected = [b["ids"] for b in stream.batches(rank=0, worker=0, num_workers=2, epoch=1)]
    assert module.train_ids[4::2] == expected
    per_loader = collections.defaultdict(list)
    for idx, ids, _ in module.val_ids[: len(module.val_ids) // 2]:
        per_loader[idx] += ids
    assert sorted(per_loader[0]) == [f"cv-{n:05d}" for n in range(5)] and len(per_loader[1]) == 4


def test_demo_mixture_with_the_real_tasks(shapes_root):
    """The registry's real tasks (caption, vqa, grounding) on the shapes shards, through the real configs."""
    from hydra.utils import instantiate

    from ofa_lightning.tokenizer import OFATokenizer

    words = "what does the image describe which region text is there how many red blue green circle square triangle"
    tokenizer = OFATokenizer.train_bpe([words] * 20, bpe_vocab_size=400, num_codes=16, num_bins=100)
    cfg = _compose(
        [
            "+data=shapes",
            "+mixture=caption_vqa_grounding",
            f"+paths.data_dir={shapes_root}",
            "data.num_workers=0",
            "data.eval.num_workers=0",
            "data.batches_per_epoch=4",
            "+data.task_options.image_size=32",
        ]
    )
    dm = instantiate(cfg.data, tokenizer=tokenizer, _recursive_=False)
    dm.setup("fit")
    assert {n: t.name for n, t in dm.tasks.items()} == {"caption": "caption", "vqa": "vqa", "grounding": "grounding"}
    stats = DataStats()
    for batch in dm.train_dataloader():
        stats.update(batch["stats"])
        assert batch["patch_images"].shape[1:] == (3, 32, 32) and bool(batch["patch_masks"].all())
        assert batch["input_ids"][:, 0].eq(tokenizer.bos_id).all()
    assert stats.num_examples == 4 * 8 and not stats.skipped, stats.skipped
    for name, loader in zip(dm.val_names, dm.val_dataloader()):
        ids = [i for b in loader for i in b["ids"]]
        assert ids and len(ids) == len(set(ids)), name


def test_resume_continues_the_uninterrupted_stream(tmp_path):
    """Kill-and-resume (P8): resumed mid-epoch at global step 3, the next batches are those of an uninterrupted run;
    also across an epoch boundary (checkpoint at the epoch's last batch)."""
    import pytorch_lightning as pl

    write_shards(tmp_path / "cap", "c", [20, 20])

    def make():
        return OFADataModule(
            {"cap": {"task": "cap", "shards": "cap"}},
            micro_batch_size=2,
            num_workers=0,
            shuffle_buffer=4,
            batches_per_epoch=5,
            shards_root=str(tmp_path),
            seed=3,
            segment_batches=2,
            eval={"split": None, "test_split": None},
            tasks={"cap": FakeTask("cap")},
        )

    def trainer(max_steps, every=None):
        callbacks = (
            [pl.callbacks.ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_top_k=-1)]
            if every
            else []
        )
        return pl.Trainer(
            accelerator="cpu",
            max_steps=max_steps,
            logger=False,
            enable_progress_bar=False,
            enable_model_summary=False,
            num_sanity_val_steps=0,
            default_root_dir=str(tmp_path),
            enable_checkpointing=bool(every),
            callbacks=callbacks,
        )

    whole = RecordingModule()
    trainer(8).fit(whole, datamodule=make())
    trainer(5, every=1).fit(RecordingModule(), datamodule=make())
    for step in (3, 5):  # mid-epoch (inside the second segment), and the epoch's last batch
        resumed = RecordingModule()
        trainer(8).fit(resumed, datamodule=make(), ckpt_path=str(next((tmp_path / "ckpt").glob(f"*step={step}.ckpt"))))
        assert resumed.train_ids == whole.train_ids[step:], step
