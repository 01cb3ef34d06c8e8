"""Box-aware transforms (ofa_lightning.images): every geometric op against hand-computed boxes."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from PIL import Image

from ofa_lightning.images import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    CenterCrop,
    Compose,
    ImageInfillingMask,
    LargeScaleJitter,
    Normalize,
    ObjectCenterCrop,
    RandomAugment,
    RandomHorizontalFlip,
    RandomResize,
    SquashResize,
    ToTensor,
    make_target,
    ofa_resize_size,
)


class FixedRng:
    """A stand-in rng returning preset values from random() (and the first item from choice())."""

    def __init__(self, *values: float):
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)

    def choice(self, seq):
        return seq[0]


def blank(w: int, h: int, color=(0, 0, 0)) -> Image.Image:
    return Image.new("RGB", (w, h), color)


def with_rect(w: int, h: int, box) -> Image.Image:
    """Black image with a white filled rectangle covering the pixel box [x0, x1) x [y0, y1)."""
    a = np.zeros((h, w, 3), dtype=np.uint8)
    x0, y0, x1, y1 = (int(v) for v in box)
    a[y0:y1, x0:x1] = 255
    return Image.fromarray(a)


def white_extent(image: Image.Image, thresh: int = 200) -> list[float]:
    a = np.asarray(image)[..., 0]
    ys, xs = np.nonzero(a > thresh)
    return [float(xs.min()), float(ys.min()), float(xs.max() + 1), float(ys.max() + 1)]


def close(a, b, tol=1e-4):
    return torch.allclose(torch.as_tensor(a, dtype=torch.float32), torch.as_tensor(b, dtype=torch.float32), atol=tol)


# ---------------------------------------------------------------------------------------------------------------
# resizes
# ---------------------------------------------------------------------------------------------------------------
def test_squash_resize_scales_boxes_and_records_ratios():
    img = blank(200, 100)
    out, t = SquashResize((50, 100))(img, {"boxes": [[10, 20, 90, 70]]})
    assert out.size == (100, 50)
    assert close(t["boxes"], [[5, 10, 45, 35]])
    assert t["w_ratio"] == 0.5 and t["h_ratio"] == 0.5
    assert t["size"] == (50, 100) and t["orig_size"] == (100, 200)


@pytest.mark.parametrize("size", [(480, 480), (128, 128), (512, 333), (300, 640)])
@pytest.mark.parametrize("interp", ["bicubic", "bilinear"])
def test_shrinking_resize_matches_pillow_to_one_level(size, interp):
    """The torch uint8 fast path for shrinking RGB images stays within 1/255 of Pillow's ``Image.resize``."""
    from torchvision.transforms import InterpolationMode

    from ofa_lightning.images.pixels import _resize_functional

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:480, 0:640]
    a = 127 + 60 * np.sin(xx / 7.0)[..., None] + 60 * np.cos(yy / 5.0)[..., None] * rng.uniform(0.2, 1, 3)
    a = np.clip(a + rng.normal(0, 12, a.shape), 0, 255).astype(np.uint8)
    img = Image.fromarray(a)
    mode = {"bicubic": InterpolationMode.BICUBIC, "bilinear": InterpolationMode.BILINEAR}[interp]
    pil = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR}[interp]
    ours = np.asarray(_resize_functional(img, list(size), mode), np.int16)
    want = np.asarray(img.resize((size[1], size[0]), pil), np.int16)
    assert ours.shape == want.shape == (size[0], size[1], 3)
    diff = np.abs(ours - want)
    assert diff.max() <= 1 and (diff > 0).mean() < 0.01
    # growing a side goes through Pillow itself: identical
    grown = _resize_functional(img, [600, 900], mode)
    assert np.array_equal(np.asarray(grown), np.asarray(img.resize((900, 600), pil)))


def test_refcoco_512_squash_ratios():
    img = blank(640, 480)
    out, t = SquashResize(512)(img, {"boxes": [[64, 48, 320, 240]]})
    assert out.size == (512, 512)
    assert t["w_ratio"] == pytest.approx(0.8) and t["h_ratio"] == pytest.approx(512 / 480)
    assert close(t["boxes"], [[51.2, 51.2, 256.0, 256.0]])
    # OFA's RandomResize([512], max_size=512) is the same squash
    assert ofa_resize_size(480, 640, 512, 512) == (512, 512)
    assert ofa_resize_size(640, 100, 512, 512) == (512, 512)


def test_ofa_resize_size_caps_each_side():
    assert ofa_resize_size(300, 400, 200) == (200, 266)  # short side 200, long int(200*4/3)
    assert ofa_resize_size(300, 400, 200, max_size=250) == (200, 250)  # long side capped, ratio not kept
    assert ofa_resize_size(400, 300, 200) == (266, 200)
    assert ofa_resize_size(200, 400, 200, max_size=300) == (200, 300)  # short side already equal


def test_random_resize_boxes():
    img = blank(400, 300)
    out, t = RandomResize([200])(img, {"boxes": [[40, 30, 200, 150]]})
    assert out.size == (266, 200)
    assert close(t["boxes"], [[40 * 266 / 400, 20, 200 * 266 / 400, 100]])
    out, t = RandomResize([200], max_size=250)(img, {"boxes": [[40, 30, 200, 150]]})
    assert out.size == (250, 200)
    assert close(t["boxes"], [[25, 20, 125, 100]])
    assert t["w_ratio"] == pytest.approx(0.625) and t["h_ratio"] == pytest.approx(2 / 3)


def test_random_resize_draws_size_from_rng():
    sizes = list(range(384, 481))
    a = [RandomResize(sizes, 672)(blank(64, 48), None, random.Random(s))[0].size for s in range(5)]
    b = [RandomResize(sizes, 672)(blank(64, 48), None, random.Random(s))[0].size for s in range(5)]
    assert a == b
    assert all(384 <= min(sz) <= 480 and max(sz) <= 672 for sz in a)


# ---------------------------------------------------------------------------------------------------------------
# crops / flip / jitter
# ---------------------------------------------------------------------------------------------------------------
def test_center_crop_shifts_clamps_and_drops():
    img = blank(100, 80)
    target = {"boxes": [[30, 20, 60, 70], [0, 0, 20, 10]], "labels": ["keep", "gone"]}
    out, t = CenterCrop(50)(img, target)
    assert out.size == (50, 50)
    # top = round((80-50)/2) = 15, left = round((100-50)/2) = 25; y1 = 70-15 = 55 clamps to 50
    assert close(t["boxes"], [[5, 5, 35, 50]])
    assert t["labels"] == ["keep"]
    assert target["boxes"] == [[30, 20, 60, 70], [0, 0, 20, 10]]  # caller's dict untouched


def test_object_center_crop_clamped_to_image():
    img = blank(400, 300)
    # centre (340, 270): left = 290 + min(400-340-50, 0) = 290; top = 220 + min(300-270-50, 0) = 200
    out, t = ObjectCenterCrop(100)(img, {"boxes": [[300, 250, 380, 290]]})
    assert out.size == (100, 100)
    assert close(t["boxes"], [[10, 50, 90, 90]])
    # near the top-left corner the crop starts at 0
    out, t = ObjectCenterCrop(100)(img, {"boxes": [[0, 0, 20, 20]]})
    assert close(t["boxes"], [[0, 0, 20, 20]])
    # centred in the middle: crop (150..250, 100..200)
    out, t = ObjectCenterCrop((100, 100))(img, {"boxes": [[180, 130, 220, 170]]})
    assert close(t["boxes"], [[30, 30, 70, 70]])


def test_object_center_crop_keeps_partial_box():
    img = blank(400, 300)
    out, t = ObjectCenterCrop(50)(img, {"boxes": [[100, 100, 300, 200]]})  # box larger than the crop
    # centre (200, 150): crop left 175, top 125; box clamped to the crop, not dropped
    assert close(t["boxes"], [[0, 0, 50, 50]])


def test_horizontal_flip():
    img = with_rect(200, 100, [10, 20, 90, 70])
    out, t = RandomHorizontalFlip(p=1.0)(img, {"boxes": [[10, 20, 90, 70]]})
    assert close(t["boxes"], [[110, 20, 190, 70]])
    assert white_extent(out) == [110, 20, 190, 70]
    out, t = RandomHorizontalFlip(p=0.0)(img, {"boxes": [[10, 20, 90, 70]]})
    assert close(t["boxes"], [[10, 20, 90, 70]])


def test_large_scale_jitter_hand_computed():
    img = blank(200, 100)
    # s = 1 + 0.5 * (2 - 1) = 1.5 -> short side 150 -> (150, 300); offsets floor(50*0.5)=25 (rows), floor(200*0.25)=50
    lsj = LargeScaleJitter(output_size=100, scale_min=1.0, scale_max=2.0)
    target = {"boxes": [[40, 20, 100, 80], [0, 0, 20, 10]], "labels": ["a", "b"]}
    out, t = lsj(img, target, FixedRng(0.5, 0.5, 0.25))
    assert out.size == (100, 100)
    # [40,20,100,80] * 1.5 = [60,30,150,120] - (50,25) = [10,5,100,95]; second box leaves the window
    assert close(t["boxes"], [[10, 5, 100, 95]])
    assert t["labels"] == ["a"]
    assert t["w_ratio"] == pytest.approx(1.5) and t["h_ratio"] == pytest.approx(1.5)


def test_large_scale_jitter_pads_small_scales():
    img = blank(100, 100, (255, 255, 255))
    out, t = LargeScaleJitter(100, 0.5, 0.5)(img, {"boxes": [[10, 10, 50, 50]]}, FixedRng(0.0, 0.0, 0.0))
    assert out.size == (100, 100)
    assert close(t["boxes"], [[5, 5, 25, 25]])
    a = np.asarray(out)
    assert a[10, 10, 0] == 255 and a[80, 80, 0] == 0  # padded bottom/right with zeros


# ---------------------------------------------------------------------------------------------------------------
# RandomAugment
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "op,arg,expected",
    [
        ("TranslateX", 7.0, [13, 20, 33, 40]),  # x' = x - 7 (OFA's cv2 matrix)
        ("TranslateY", -7.0, [20, 27, 40, 47]),  # y' = y + 7
        ("ShearX", 0.21, [24.2, 20, 48.4, 40]),  # x' = x + 0.21 y (about the top-left corner)
        ("ShearY", 0.21, [20, 24.2, 40, 48.4]),  # y' = y + 0.21 x
        ("Rotate", 90.0, [20, 60, 40, 80]),  # counter-clockwise about the centre (50, 50)
    ],
)
def test_random_augment_geometric_ops_move_boxes(op, arg, expected):
    box = [20, 20, 40, 40]
    img = with_rect(100, 100, box)
    out, t = RandomAugment().apply_op(op, arg, img, make_target(img, [box]))
    assert close(t["boxes"], [expected], tol=1e-3)
    # the image moved the same way (pixel-level extent within interpolation error)
    extent = white_extent(out, thresh=128)
    assert max(abs(a - b) for a, b in zip(extent, expected)) <= 1.5


@pytest.mark.parametrize("op", ["Identity", "AutoContrast", "Equalize", "Brightness", "Sharpness"])
def test_random_augment_photometric_ops_keep_boxes(op):
    img = Image.fromarray((np.random.RandomState(0).rand(32, 48, 3) * 200).astype(np.uint8))
    aug = RandomAugment()
    out, t = aug.apply_op(op, aug._arg(op, random.Random(0)), img, make_target(img, [[1, 2, 30, 20]]))
    assert out.size == img.size
    assert close(t["boxes"], [[1, 2, 30, 20]])


def test_random_augment_magnitudes_and_determinism():
    aug = RandomAugment(n=2, m=7)
    assert aug._arg("Brightness", random.Random(0)) == pytest.approx(1.36)
    assert abs(aug._arg("ShearX", random.Random(0))) == pytest.approx(0.21)
    assert abs(aug._arg("TranslateX", random.Random(0))) == pytest.approx(7.0)
    assert abs(aug._arg("Rotate", random.Random(0))) == pytest.approx(21.0)
    img = Image.fromarray((np.random.RandomState(1).rand(40, 40, 3) * 255).astype(np.uint8))
    a, _ = aug(img, None, random.Random(5))
    b, _ = aug(img, None, random.Random(5))
    assert np.array_equal(np.asarray(a), np.asarray(b))
    counts = {}
    rng = random.Random(0)
    for _ in range(4000):
        ops = aug.sample_ops(rng)
        counts[len(ops)] = counts.get(len(ops), 0) + 1
    # each of the 2 ops applied with probability 0.5: 0/1/2 ops in proportions 1/4, 1/2, 1/4
    assert abs(counts[1] / 4000 - 0.5) < 0.05 and abs(counts[0] / 4000 - 0.25) < 0.05


def test_random_augment_disable_mode_skips_geometry_with_boxes():
    aug = RandomAugment(n=10, m=7, ops=["ShearX", "Rotate"], p=1.0, boxes="disable")
    img = with_rect(64, 64, [10, 10, 30, 30])
    out, t = aug(img, {"boxes": [[10, 10, 30, 30]]}, random.Random(0))
    assert np.array_equal(np.asarray(out), np.asarray(img))
    assert close(t["boxes"], [[10, 10, 30, 30]])
    out, _ = aug(img, None, random.Random(0))  # no boxes: geometry applies
    assert not np.array_equal(np.asarray(out), np.asarray(img))
    with pytest.raises(ValueError):
        RandomAugment(ops=["Invert"])


# ---------------------------------------------------------------------------------------------------------------
# tensors
# ---------------------------------------------------------------------------------------------------------------
def test_to_tensor_and_both_normalisations():
    img = Image.new("RGB", (4, 2), (255, 0, 255))
    x, _ = Compose([ToTensor(), Normalize.named("ofa")])(img)
    assert x.shape == (3, 2, 4) and x.dtype == torch.float32
    assert torch.allclose(x[0], torch.ones(2, 4)) and torch.allclose(x[1], -torch.ones(2, 4))
    y, _ = Compose([ToTensor(), Normalize.named("imagenet")])(img)
    assert torch.allclose(y[0], torch.full((2, 4), (1 - IMAGENET_MEAN[0]) / IMAGENET_STD[0]))
    assert torch.allclose(y[1], torch.full((2, 4), (0 - IMAGENET_MEAN[1]) / IMAGENET_STD[1]))
    with pytest.raises(ValueError):
        Normalize.named("nope")


def test_image_infilling_centre_mask():
    img = Image.new("RGB", (256, 256), (255, 255, 255))
    x, t = Compose([ToTensor(), Normalize.named("ofa"), ImageInfillingMask(128)])(img)
    assert t["infill_region"] == (64, 64, 192, 192)
    assert torch.all(x[:, 64:192, 64:192] == 0)
    assert torch.all(x[:, 63, :] == 1) and torch.all(x[:, 192, :] == 1) and torch.all(x[:, :, 63] == 1)
    assert ImageInfillingMask().region(256, 256) == (64, 64, 192, 192)


def test_compose_threads_rng_and_accumulates_ratios():
    pipeline = Compose(
        [
            RandomResize(list(range(60, 90)), max_size=120),
            CenterCrop(50),
            SquashResize(25),
            ToTensor(),
            Normalize.named("ofa"),
        ]
    )
    img = Image.fromarray((np.random.RandomState(0).rand(80, 100, 3) * 255).astype(np.uint8))
    a, ta = pipeline(img, {"boxes": [[30, 20, 70, 60]]}, random.Random(3))
    b, tb = pipeline(img, {"boxes": [[30, 20, 70, 60]]}, random.Random(3))
    assert torch.equal(a, b) and torch.equal(ta["boxes"], tb["boxes"])
    assert a.shape == (3, 25, 25)
    h, w = ofa_resize_size(80, 100, random.Random(3).choice(list(range(60, 90))), 120)
    assert ta["w_ratio"] == pytest.approx(w / 100 * 25 / 50)
    assert ta["h_ratio"] == pytest.approx(h / 80 * 25 / 50)


@pytest.mark.parametrize("size", [(48, 40), (60, 80), (90, 120)])
@pytest.mark.parametrize("mode", ["RGB", "L"])
def test_compose_resize_to_tensor_fast_path_equals_the_steps(size, mode, monkeypatch):
    """Inside ``Compose``, ``SquashResize`` followed by ``ToTensor`` hands the resized pixels over as a uint8 tensor
    (no PIL round trip); the image, boxes and ratios must equal running the three transforms one by one (exactly;
    a shrink, an identity size and a grown side; non-RGB images take the PIL path)."""
    rng = np.random.RandomState(0)
    img = Image.fromarray((rng.rand(60, 80, 3) * 255).astype(np.uint8)).convert(mode)
    steps = [SquashResize(size), ToTensor(), Normalize.named("imagenet") if mode == "RGB" else Normalize([0.4], [0.3])]
    target = {"boxes": [[10, 5, 50, 40]]}
    fast = mode == "RGB" and size[0] <= 60 and size[1] <= 80
    if fast:  # the fused call must not go back through PIL
        with monkeypatch.context() as m:
            m.setattr(Image, "fromarray", lambda *a, **k: pytest.fail("PIL round trip on the fast path"))
            m.setattr(Image.Image, "split", lambda *a, **k: pytest.fail("PIL round trip on the fast path"))
            fused, tf = Compose(steps)(img, target)
    else:
        fused, tf = Compose(steps)(img, target)
    image, t = img, target
    for step in steps:
        image, t = step(image, t)
    assert fused.dtype == torch.float32 and fused.is_contiguous() and fused.shape == (3 if mode == "RGB" else 1, *size)
    assert torch.equal(fused, image)
    assert torch.equal(tf["boxes"], t["boxes"]) and (tf["w_ratio"], tf["h_ratio"]) == (t["w_ratio"], t["h_ratio"])
    assert tf["size"] == t["size"] == size


def test_to_tensor_scales_uint8_tensors_like_to_dtype():
    from torchvision.transforms.v2 import functional as F

    pixels = torch.randint(0, 256, (1, 7, 5, 3), dtype=torch.uint8).permute(0, 3, 1, 2)[0]  # channels-last view
    out, _ = ToTensor()(pixels)
    assert out.is_contiguous() and torch.equal(out, F.to_dtype(pixels.contiguous(), torch.float32, scale=True))
    with pytest.raises(ValueError, match="uint8"):
        ToTensor()(torch.zeros(2, 3, 5, 5, dtype=torch.uint8))


def test_deferred_normalization_returns_pending_pixels_with_the_same_values():
    """Inside ``deferred_normalization`` a Compose ending in ToTensor, Normalize returns a PendingImage whose float
    image equals the normal output to the bit (SquashResize fast path and plain PIL input alike); other pipelines,
    non-RGB images and calls outside the block return float tensors as before."""
    from ofa_lightning.images import ImageInfillingMask, PendingImage, deferred_normalization, image_tensor

    img = Image.fromarray((np.random.RandomState(2).rand(60, 80, 3) * 255).astype(np.uint8))
    for steps in (
        [SquashResize((48, 40)), ToTensor(), Normalize.named("imagenet")],
        [CenterCrop(50), ToTensor(), Normalize.named("ofa")],
    ):
        want, twant = Compose(steps)(img, {"boxes": [[10, 5, 50, 40]]})
        with deferred_normalization():
            got, tgot = Compose(steps)(img, {"boxes": [[10, 5, 50, 40]]})
        assert isinstance(got, PendingImage) and got.pixels.dtype == torch.uint8
        assert got.shape == want.shape and got.dtype == torch.float32
        assert torch.equal(got.to_tensor(), want) and torch.equal(image_tensor(got), want)
        out = torch.full((2, *want.shape), 7.0)
        got.to_tensor(out=out[1])
        assert torch.equal(out[1], want) and torch.all(out[0] == 7)
        assert torch.equal(tgot["boxes"], twant["boxes"]) and tgot["size"] == twant["size"]
    with deferred_normalization():
        infill, _ = Compose([ToTensor(), Normalize.named("ofa"), ImageInfillingMask(16)])(img)
        grey, _ = Compose([SquashResize(32), ToTensor(), Normalize([0.5], [0.5])])(img.convert("L"))
    assert isinstance(infill, torch.Tensor) and isinstance(grey, torch.Tensor) and grey.shape == (1, 32, 32)
    assert isinstance(Compose([SquashResize(32), ToTensor(), Normalize.named("ofa")])(img)[0], torch.Tensor)
