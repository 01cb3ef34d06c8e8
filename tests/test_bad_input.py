"""Bad input that the other suites did not already try (docs/reliability.md lists every case and
the test of each): a truncated JPEG, non-UTF-8 text, an empty shard, an unreadable shard URL, a vocabulary that does
not match the model; plus the skip counters reaching the logs."""

from __future__ import annotations

import io
import json
import random
import tarfile

import pytest
from PIL import Image
from test_data_pipeline import FakeTask, write_shards

from ofa_lightning.data.samples import DataStats, Skip, build_example, decode_sample
from ofa_lightning.data.shards import resolve_shards
from ofa_lightning.data.stream import MixtureStream, StreamSource


def _jpeg(size=(32, 24)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (200, 30, 30)).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_truncated_jpeg_is_a_counted_corrupt_image():
    data = _jpeg()
    assert not isinstance(decode_sample({"__key__": "ok", "json": b'{"n": 1}', "jpg": data}), Skip)
    skip = decode_sample({"__key__": "cut", "json": b'{"n": 1}', "jpg": data[: len(data) // 2]})
    assert isinstance(skip, Skip) and skip.reason == "corrupt image" and skip.id == "cut"


def test_non_utf8_text_is_a_counted_bad_json():
    raw = {"__key__": "k", "json": b'{"id": "k", "n": 1, "caption": "caf\xe9 \xff"}', "png": None}
    raw.pop("png")
    skip = build_example(FakeTask(), raw, train=True, rng=random.Random(0))
    assert isinstance(skip, Skip) and skip.reason == "bad json" and "UnicodeDecodeError" in skip.detail
    stats = DataStats()
    stats.skip_record(skip)
    assert stats.log_dict("data/train/")["data/train/skipped/bad_json"] == 1.0


def _empty_tar(path):
    with tarfile.open(path, "w"):
        pass
    return str(path)


def test_empty_shard_is_counted_and_the_stream_goes_on(tmp_path):
    good = write_shards(tmp_path / "s", "g", [6])
    empty = _empty_tar(tmp_path / "s" / "train-000009.tar")
    stream = MixtureStream([StreamSource("s", FakeTask(), [empty, *good])], 2, seed=0, shuffle_buffer=1)
    stats = DataStats()
    for _, batch in zip(range(10), stream.batches()):
        stats.update(batch["stats"])
        assert len(batch["ids"]) == 2
    assert stats.skipped.get("empty shard", 0) >= 1 and stats.num_examples == 20
    only_empty = MixtureStream([StreamSource("e", FakeTask(), [empty])], 2, seed=0)
    with pytest.raises(RuntimeError, match="'e'.*shards in a row gave no sample"):
        next(only_empty.batches())


def test_unreadable_shard_url(tmp_path):
    # a local path that does not exist fails at set-up with the path named
    with pytest.raises(FileNotFoundError, match="missing-000000.tar"):
        resolve_shards(str(tmp_path / "missing-000000.tar"))
    # a remote URL that cannot be opened at read time is a counted skip; the source's other shards go on
    good = write_shards(tmp_path / "r", "r", [4])
    stream = MixtureStream(
        [StreamSource("r", FakeTask(), ["memory://no/such/shard.tar", *good])], 2, seed=1, shuffle_buffer=1
    )
    stats = DataStats()
    for _, batch in zip(range(8), stream.batches()):
        stats.update(batch["stats"])
    assert stats.skipped.get("unreadable shard", 0) >= 1 and stats.num_examples == 16


def test_vocabulary_mismatch_between_model_and_tokenizer_is_refused(tmp_path):
    from ofa_lightning.tokenizer import OFATokenizer
    from ofa_lightning.training.run import build_model_config, compose_config

    tok = OFATokenizer.train_bpe(["a red square and a blue circle"] * 10, bpe_vocab_size=300, num_codes=8, num_bins=16)
    cfg = compose_config(["model=tiny", f"model.vocab_size={tok.vocab_size + 5}"], tmp_path, tmp_path)
    with pytest.raises(
        ValueError,
        match=rf"model.vocab_size={tok.vocab_size + 5} but the tokenizer has "
        rf"{tok.vocab_size} ids",
    ):
        build_model_config(cfg, tok)
    assert build_model_config(compose_config(["model=tiny"], tmp_path, tmp_path), tok).vocab_size == tok.vocab_size


def test_resuming_with_another_vocabulary_names_the_tensors(tmp_path):
    """A checkpoint of a model with another vocabulary size cannot be loaded into this one: the error names the
    embedding and both shapes (never a silent partial load)."""
    from ofa_lightning.model import OFAConfig
    from ofa_lightning.training import OFALitModule

    small = dict(
        encoder_layers=1,
        decoder_layers=1,
        d_model=32,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        dropout=0.0,
    )
    a = OFALitModule(OFAConfig.from_name("tiny", vocab_size=40, **small))
    b = OFALitModule(OFAConfig.from_name("tiny", vocab_size=48, **small))
    with pytest.raises(RuntimeError, match=r"embed_tokens.weight.*torch.Size\(\[40, 32\]\).*torch.Size\(\[48, 32\]\)"):
        b.load_state_dict(a.state_dict())


def test_skip_counters_reach_the_logged_metrics():
    """The train counters a DataStatsCallback logs carry every skip reason (nothing is lost silently)."""
    from ofa_lightning.data import DataStatsCallback

    cb = DataStatsCallback(log_every_n_steps=1)
    logged = {}

    class _Module:
        def log_dict(self, values, **kw):
            logged.update(values)

    class _Trainer:
        global_step = 0

    batch = {
        "stats": {
            "skipped": {"corrupt image": 2, "empty shard": 1, "caption: text too long: captions": 1},
            "mix": {"caption": 5},
        }
    }
    cb.on_train_batch_start(_Trainer(), _Module(), batch, 0)
    assert logged["data/train/skipped/corrupt_image"] == 2.0 and logged["data/train/skipped/empty_shard"] == 1.0
    assert logged["data/train/skipped/caption/text_too_long/captions"] == 1.0 and logged["data/train/skipped"] == 4.0
    assert json.loads(json.dumps(cb.state_dict()))["train"]["skipped"]["corrupt image"] == 2  # kept in checkpoints


def test_decompression_bomb_is_a_counted_corrupt_image(monkeypatch):
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 500)  # the 32×24 test image (768 px) is now "too large"
    skip = decode_sample({"__key__": "bomb", "json": b'{"n": 1}', "jpg": _jpeg()})
    assert isinstance(skip, Skip) and skip.reason == "corrupt image" and "DecompressionBomb" in skip.detail
