"""Every bad-input kind of docs/reliability.md's table, put into the shards of a fresh demo-sized run: the run
trains its tokenizer, trains, evaluates and checkpoints; each phase that reads shards counts and names the skips
(tokenizer training too, which reads the shards before the training stream does), and `ofa-prepare inspect`
reports them instead of stopping."""

from __future__ import annotations

import io
import json
import logging
import tarfile
from pathlib import Path

import pytest
import torch

from data_recipes.shapes_pipeline import build_shapes_shards
from ofa_lightning.data.shards import iter_json_samples
from ofa_lightning.training.run import compose_config, train

SOURCES = {  # recipe folder -> (text field, a field to mistype)
    "coco_caption": ("captions", "captions"),
    "vqav2": ("question", "question"),
    "refcoco": ("expression", "expression"),
    "detection": ("labels", "boxes"),
}
TINY = [
    "experiment=demo",
    "logger=none",
    "data.micro_batch_size=4",
    "data.task_options.image_size=64",
    "model.encoder_layers=1",
    "model.decoder_layers=1",
    "data.num_workers=0",
    "data.shuffle_buffer=8",
    "data.eval.num_workers=0",
    "data.eval.max_samples=40",
    "trainer.max_steps=4",
    "trainer.limit_val_batches=2",
    "trainer.val_check_interval=4",
    "trainer.precision=32-true",
    "checkpoint_every_n_steps=4",
    "tokenizer.max_samples=200",
    "test_after_fit=false",
    "+tracking.throughput.enabled=false",
    "+tracking.predictions.enabled=false",
    "run_name=bad",
]


def _samples(tar_path: Path) -> list[dict[str, bytes]]:
    out: dict[str, dict[str, bytes]] = {}
    with tarfile.open(tar_path) as tar:
        for member in tar:
            key, ext = member.name.split(".", 1)
            out.setdefault(key, {})[ext] = tar.extractfile(member).read()
    return list(out.values())


def _write(path: Path, samples: list[tuple[str, dict[str, bytes]]]) -> None:
    with tarfile.open(path, "w") as tar:
        for key, members in samples:
            for ext, data in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))


def _bomb_png() -> bytes:
    """A small PNG that declares 30,000 × 30,000 pixels (a decompression bomb)."""
    import struct
    import zlib

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", 30000, 30000, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 100)) + chunk(b"IEND", b"")
    )


def _bad_variants(good: dict[str, bytes], text_field: str, typed_field: str) -> list[tuple[str, dict[str, bytes]]]:
    fields = json.loads(good["json"])
    image_ext = next(e for e in good if e != "json")

    def with_fields(**changes):
        new = dict(fields)
        for k, v in changes.items():
            if v is None:
                new.pop(k, None)
            else:
                new[k] = v
        return json.dumps(new).encode()

    long_text = "a " * 3000
    text = lambda t: [t] if isinstance(fields.get(text_field), list) else t  # noqa: E731
    variants = {
        "garbage-image": {"json": good["json"], image_ext: b"\x00garbage bytes"},
        "cut-jpeg": {"json": good["json"], image_ext: good[image_ext][: len(good[image_ext]) // 2]},
        "bomb": {"json": good["json"], "png": _bomb_png()},
        "no-json": {image_ext: good[image_ext]},
        "bad-json": {"json": b"{not json", image_ext: good[image_ext]},
        "non-utf8": {"json": good["json"].replace(b'"split"', b'"\xff\xfesplit"'), image_ext: good[image_ext]},
        "missing-field": {"json": with_fields(**{text_field: None}), image_ext: good[image_ext]},
        "mistyped-field": {"json": with_fields(**{typed_field: 5}), image_ext: good[image_ext]},
        "empty-text": {"json": with_fields(**{text_field: text("")}), image_ext: good[image_ext]},
        "long-text": {"json": with_fields(**{text_field: text(long_text)}), image_ext: good[image_ext]},
        "oov-text": {"json": with_fields(**{text_field: text("the <bin_5000> shape")}), image_ext: good[image_ext]},
    }
    if "box" in fields:
        variants["box-outside"] = {"json": with_fields(box=[0, 0, 500, 500]), image_ext: good[image_ext]}
        variants["box-inverted"] = {"json": with_fields(box=[40, 40, 10, 10]), image_ext: good[image_ext]}
        variants["box-malformed"] = {"json": with_fields(box=[1, "x"]), image_ext: good[image_ext]}
    return [(f"bad-{name}", members) for name, members in variants.items()]


def spoil(shards: Path) -> dict[str, int]:
    """Adds to each source's train and val splits: a shard of bad samples (with a few good ones), a copy of the
    first shard cut short, and an empty shard; returns the number of bad members written per source."""
    written = {}
    for recipe, (text_field, typed_field) in SOURCES.items():
        folder = shards / recipe
        if not folder.is_dir():
            continue
        manifest = json.loads((folder / "manifest.json").read_text())
        sizes = json.loads((folder / "sizes.json").read_text())
        for split in ("train", "val"):
            first = folder / f"{split}-000000.tar"
            good = _samples(first)
            bad = _bad_variants(good[0], text_field, typed_field)
            mixed = [(f"ok-{i}", s) for i, s in enumerate(good[:3])] + bad
            _write(folder / f"{split}-000901.tar", mixed)
            data = first.read_bytes()
            (folder / f"{split}-000902.tar").write_bytes(data[: int(len(data) * 0.6) + 7])
            _write(folder / f"{split}-000903.tar", [])
            entries = {"000901": len(mixed), "000902": len(good), "000903": 0}
            for stem, count in entries.items():
                name = f"{split}-{stem}.tar"
                manifest["splits"][split]["shards"].append({"file": name, "num_samples": count})
                sizes[name] = count
            written[recipe] = len(bad)
        (folder / "manifest.json").write_text(json.dumps(manifest))
        (folder / "sizes.json").write_text(json.dumps(sizes))
    return written


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    root = tmp_path_factory.mktemp("bad_inputs")
    build_shapes_shards(root / "data" / "shapes", num_images=24, seed=4, image_size=64)
    written = spoil(root / "data" / "shapes" / "shards")
    assert {"coco_caption", "vqav2", "refcoco"} <= set(written)
    return root


def test_json_reader_counts_and_names_every_bad_kind(project):
    from ofa_lightning.data.samples import DataStats

    folder = project / "data" / "shapes" / "shards" / "coco_caption"
    stats = DataStats()
    urls = [str(folder / n) for n in ("train-000901.tar", "train-000902.tar", "train-000903.tar")]
    rows = list(iter_json_samples(urls, stats))
    assert stats.skipped == {"missing json": 1, "bad json": 2, "unreadable shard": 1}
    assert len(rows) > 3


@pytest.mark.usefixtures("one_thread")
def test_a_fresh_demo_run_with_every_bad_input_trains(project, caplog):
    run = project / "runs" / "bad"
    with caplog.at_level(logging.WARNING):
        metrics = train(compose_config(TINY, run, project))
    text = caplog.text
    assert "tokenizer training: skipped" in text and "bad json" in text  # the pass before training
    assert "unreadable shard" in text
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 4
    assert any(k.startswith("val/") for k in metrics), sorted(metrics)


def test_inspect_reports_bad_samples_and_damaged_shards(project):
    from data_recipes.inspect_shards import inspect

    report, lines = inspect([project / "data" / "shapes" / "shards" / "coco_caption"], {"train"}, num=0)
    skips = report[str(project / "data" / "shapes" / "shards" / "coco_caption")]["train"]["read_skips"]
    assert skips == {"bad json": 2, "unreadable shard": 1}
    assert any("unreadable while inspecting" in line and "train-000902.tar" in line for line in lines)


def test_baselines_and_scst_references_skip_bad_samples_by_name(project, caplog):
    from types import SimpleNamespace

    from ofa_lightning.analysis.baselines import _records
    from ofa_lightning.training.scst import _training_references

    folder = project / "data" / "shapes" / "shards" / "coco_caption"
    with caplog.at_level(logging.WARNING):
        rows = _records(str(folder), "train")
    assert rows and "baselines" in caplog.text and "unreadable shard" in caplog.text
    from ofa_lightning.analysis.baselines import caption_baseline, grounding_baseline, vqa_baseline

    shards = project / "data" / "shapes" / "shards"
    assert caption_baseline(str(shards / "coco_caption"), "train", "train") >= 0
    assert vqa_baseline(str(shards / "vqav2"), "train", "train") >= 0
    assert 0 <= grounding_baseline(str(shards / "refcoco"), "train") <= 1
    assert "bad value: box" in caplog.text and "missing field: captions" in caplog.text
    caplog.clear()
    source = SimpleNamespace(name="caption", task="caption", shards=str(folder), split="train")
    datamodule = SimpleNamespace(sources=[source], tasks={}, _rooted=lambda spec: spec)
    module = SimpleNamespace(task_for=lambda name: SimpleNamespace(name="caption", cfg={}))
    with caplog.at_level(logging.WARNING):
        references = _training_references(datamodule, module, None)
    assert references and "SCST df=train: skipped" in caplog.text and "bad json" in caplog.text
