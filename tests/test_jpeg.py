"""The loaders' JPEG route (ofa_lightning/images/jpeg.py): torchvision decodes, the image still behaves as PIL's own,
and nothing it feeds downstream differs from what PIL's decode gave."""

from __future__ import annotations

import io
import pickle
import random
import weakref

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from ofa_lightning.data.collate import collate_examples
from ofa_lightning.data.samples import Skip, build_example, decode_sample
from ofa_lightning.images import jpeg
from ofa_lightning.images.jpeg import DecodedJpeg, open_image, set_fast_jpeg
from ofa_lightning.images.pixels import _rgb_pixels

pytestmark = pytest.mark.skipif(not jpeg.fast_jpeg_available(), reason="torchvision cannot decode JPEGs here")


@pytest.fixture(scope="module")
def caption_task():
    from ofa_lightning.tasks.caption import CaptionTask
    from ofa_lightning.tokenizer import OFATokenizer

    tokenizer = OFATokenizer.train_bpe(["a red square on grass", "a cat"] * 4, bpe_vocab_size=300, min_frequency=1)
    return CaptionTask(tokenizer, image_size=48)


def _photo(h: int = 61, w: int = 83, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 150, w)[None, :, None] + np.linspace(0, 60, h)[:, None, None]
    return np.clip(rng.normal(0, 40, (h, w, 3)) + ramp, 0, 255).astype(np.uint8)


def _jpeg(array: np.ndarray, mode: str = "RGB", **save) -> bytes:
    out = io.BytesIO()
    Image.fromarray(array if mode == "RGB" else array[..., 0]).save(out, "JPEG", **save)
    return out.getvalue()


def _pil_pixels(data: bytes) -> np.ndarray:
    with Image.open(io.BytesIO(data)) as im:
        return np.array(im.convert("RGB"))


@pytest.mark.parametrize(
    "save",
    [
        dict(quality=90),
        dict(quality=90, subsampling=0),
        dict(quality=90, subsampling=1),
        dict(quality=80, progressive=True),
        dict(quality=70, optimize=True),
        dict(quality=100),
    ],
    ids=["420", "444", "422", "progressive", "optimized", "q100"],
)
def test_decoded_pixels_equal_pils(save):
    data = _jpeg(_photo(), **save)
    image = open_image(data)
    assert isinstance(image, DecodedJpeg)
    assert (image.size, image.mode, image.format) == ((83, 61), "RGB", "JPEG")
    pixels = image.decoded_pixels()
    assert pixels.dtype == torch.uint8 and tuple(pixels.shape) == (3, 61, 83)
    np.testing.assert_array_equal(pixels.permute(1, 2, 0).numpy(), _pil_pixels(data))
    assert _rgb_pixels(image) is pixels  # the transforms' fast path takes the tensor, no copy


def test_decoded_jpeg_behaves_as_a_pil_image():
    data = _jpeg(_photo())
    expected = _pil_pixels(data)
    image = open_image(data)
    crop = image.crop((5, 7, 40, 30))  # inside the image: a view of the decoded pixels, PIL's values
    assert isinstance(crop, DecodedJpeg) and crop.size == (35, 23)
    np.testing.assert_array_equal(np.array(crop), expected[7:30, 5:40])
    twin = image.copy()
    assert twin.decoded_pixels() is image.decoded_pixels()
    outside = image.crop((-4, 50, 20, 70))  # beyond the edges: PIL's crop, zero-filled as PIL does
    np.testing.assert_array_equal(np.array(outside), np.array(Image.fromarray(expected).crop((-4, 50, 20, 70))))
    np.testing.assert_array_equal(np.array(image), expected)
    assert image.decoded_pixels() is None  # PIL has loaded it: its storage is the only copy from now on
    assert twin.decoded_pixels() is not None  # the other image is untouched
    np.testing.assert_array_equal(np.array(twin), expected)
    np.testing.assert_array_equal(
        np.array(image.resize((20, 10), Image.BICUBIC)),
        np.array(Image.fromarray(expected).resize((20, 10), Image.BICUBIC)),
    )
    clone = pickle.loads(pickle.dumps(open_image(data)))
    np.testing.assert_array_equal(np.array(clone), expected)
    np.testing.assert_array_equal(np.array(open_image(data).copy()), expected)
    assert open_image(data).convert("L").size == (83, 61)


def test_to_tensor_reads_the_decoded_pixels_with_pils_values():
    from ofa_lightning.images import ToTensor

    data = _jpeg(_photo(), quality=88)
    pil = Image.open(io.BytesIO(data))
    pil.load()
    fast, _ = ToTensor().apply(open_image(data), {}, None)
    slow, _ = ToTensor().apply(pil, {}, None)
    assert fast.is_contiguous() and torch.equal(fast, slow)


def test_an_edited_image_never_hands_over_stale_pixels():
    image = open_image(_jpeg(_photo()))
    ImageDraw.Draw(image).rectangle([0, 0, 9, 9], fill=(255, 0, 0))
    pixels = _rgb_pixels(image)
    assert pixels[:, :10, :10].tolist() == torch.tensor([255, 0, 0]).view(3, 1, 1).expand(3, 10, 10).tolist()
    image2 = open_image(_jpeg(_photo()))
    image2.paste((0, 0, 255), (0, 0, 4, 4))
    assert _rgb_pixels(image2)[2, :4, :4].eq(255).all()


def test_other_images_go_through_pil():
    grey = open_image(_jpeg(_photo(), mode="L"))
    assert not isinstance(grey, DecodedJpeg) and grey.mode == "RGB"
    png = io.BytesIO()
    Image.fromarray(_photo()).save(png, "PNG")
    assert not isinstance(open_image(png.getvalue()), DecodedJpeg)
    before = set_fast_jpeg(False)
    try:
        plain = open_image(_jpeg(_photo()))
        assert not isinstance(plain, DecodedJpeg) and plain.mode == "RGB"
    finally:
        set_fast_jpeg(before)


def test_truncated_jpeg_is_still_a_counted_corrupt_image():
    data = _jpeg(_photo(120, 160), quality=95)
    out = decode_sample({"__key__": "k", "json": b'{"id": "k"}', "jpg": data[: len(data) // 2]})
    assert isinstance(out, Skip) and out.reason == "corrupt image"


def test_batches_equal_to_the_bit_with_and_without_the_torchvision_route(caption_task):
    raws = [
        {
            "__key__": f"s{i}",
            "json": b'{"captions": ["a red square on grass"]}',
            "jpg": _jpeg(_photo(64 + 8 * i, 96 - 4 * i, seed=i), quality=85 + i),
        }
        for i in range(4)
    ]

    def batch():
        rng = random.Random(0)
        return collate_examples(
            [build_example(caption_task, raw, train=True, rng=rng) for raw in raws], caption_task.tokenizer.pad_id
        )

    fast = batch()
    before = set_fast_jpeg(False)
    try:
        slow = batch()
    finally:
        set_fast_jpeg(before)
    assert torch.equal(fast["patch_images"], slow["patch_images"])
    assert all(torch.equal(fast[k], slow[k]) for k in fast if isinstance(fast[k], torch.Tensor))


def test_stream_drops_a_batch_before_collating_the_next(caption_task, tmp_path, monkeypatch):
    """MixtureStream used to hold the batch it had yielded while it built the next one: two batch buffers alive, and
    each new one fresh from the OS (page faults)."""
    import webdataset as wds

    from ofa_lightning.data import stream as stream_module
    from ofa_lightning.data.stream import MixtureStream, StreamSource

    url = str(tmp_path / "s.tar")
    with wds.TarWriter(url) as sink:
        for i in range(12):
            sink.write({"__key__": f"k{i:03d}", "json": {"captions": ["a cat"]}, "jpg": _jpeg(_photo(seed=i))})
    stream = MixtureStream(
        [StreamSource("caption", caption_task, [url])],
        2,
        seed=0,
        shuffle_buffer=4,
        pad_id=caption_task.tokenizer.pad_id,
    )
    previous: list[weakref.ref] = []
    alive_at_collate: list[bool] = []
    real = stream_module.collate_examples

    def spy(*args, **kwargs):
        alive_at_collate.append(any(ref() is not None for ref in previous))
        return real(*args, **kwargs)

    monkeypatch.setattr(stream_module, "collate_examples", spy)
    batches = stream.batches()
    for _ in range(4):
        previous = [weakref.ref(next(batches)["patch_images"])]  # the consumer keeps nothing
    assert alive_at_collate == [False] * 4
