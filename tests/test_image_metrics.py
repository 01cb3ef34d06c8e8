"""Image-generation metrics: CLIP score (random-init CLIP), FID / IS (tiny feature extractors), offline skips."""

from __future__ import annotations

import os

import pytest
import torch
from torch import nn

from ofa_lightning.metrics.image import (
    MetricUnavailable,
    build_image_metrics,
    clip_score_metric,
    fid_metric,
    inception_score_metric,
    to_uint8,
)

pytest.importorskip("transformers")


class MeanColour(nn.Module):
    """A deterministic 'feature extractor': per-channel means and stds of uint8 images."""

    num_features = 6

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255
        return torch.cat([x.mean((2, 3)), x.std((2, 3))], 1)


class ColourClassifier(nn.Module):
    """Logits over {red, green, blue}: which channel dominates (sharp)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return 20 * x.float().mean((2, 3)) / 255


def solid(colours, size=16):
    return torch.stack([torch.tensor(c, dtype=torch.uint8).view(3, 1, 1).expand(3, size, size) for c in colours])


@pytest.fixture(scope="module")
def reranker():
    from ofa_lightning.generation.rerank import ClipReranker

    return ClipReranker.random_init(seed=0, image_size=32)


def test_clip_score_matches_the_cosine_of_the_reranker(reranker, one_thread):
    from PIL import Image

    metric = clip_score_metric(reranker=reranker)
    images = solid([(250, 10, 10), (10, 10, 250)], size=40)
    captions = ["a red square", "a blue circle"]
    metric.update(images, captions)
    value = float(metric.compute())
    pils = [Image.fromarray(im.permute(1, 2, 0).numpy()) for im in images]
    cos = torch.stack([reranker.scores([p], c)[0] for p, c in zip(pils, captions)])
    expected = float((100 * cos.clamp(min=0)).mean())
    assert value == pytest.approx(expected, abs=1e-3)


def test_fid_with_a_tiny_feature_extractor_separates_distributions():
    g = torch.Generator().manual_seed(0)
    real = torch.randint(0, 256, (32, 3, 8, 8), generator=g, dtype=torch.uint8)
    same = torch.randint(0, 256, (32, 3, 8, 8), generator=g, dtype=torch.uint8)
    shifted = (same.int() // 2).to(torch.uint8)
    fid = fid_metric(MeanColour())
    fid.update(real, real=True)
    fid.update(same, real=False)
    close = float(fid.compute())
    fid.reset()
    fid.update(real, real=True)
    fid.update(shifted, real=False)
    far = float(fid.compute())
    assert close < 0.05 < far


@pytest.mark.filterwarnings(r"ignore:std\(\)")
def test_inception_score_with_a_tiny_classifier():
    diverse = solid([(255, 0, 0), (0, 255, 0), (0, 0, 255)] * 4)
    uniform = solid([(255, 0, 0)] * 12)
    metric = inception_score_metric(ColourClassifier(), splits=1)
    metric.update(diverse)
    high, _ = metric.compute()
    metric.reset()
    metric.update(uniform)
    low, _ = metric.compute()
    assert float(high) == pytest.approx(3.0, rel=0.01)  # 3 equally used, confidently predicted classes
    assert float(low) == pytest.approx(1.0, abs=0.01)


def test_unavailable_metrics_are_skipped_with_a_reason(tmp_path):
    metrics, skipped = build_image_metrics(clip_path=None, inception_weights=str(tmp_path / "missing.pth"))
    assert metrics == {}
    assert "no CLIP weights" in skipped["clip_score"]
    assert "does not exist" in skipped["fid"] and "does not exist" in skipped["inception_score"]
    with pytest.raises(MetricUnavailable, match="does not exist"):
        clip_score_metric(tmp_path / "no_clip")


def test_inception_weights_from_a_path():
    """FID with torch-fidelity's Inception-v3 read from $OFA_INCEPTION_WEIGHTS (skipped with the reason otherwise)."""
    path = os.environ.get("OFA_INCEPTION_WEIGHTS")
    try:
        fid = fid_metric(weights_path=path)
    except MetricUnavailable as exc:
        pytest.skip(f"Inception FID cannot run offline here: {exc}")
    images = to_uint8(torch.rand(4, 3, 64, 64))
    fid.update(images, real=True)
    fid.update(images, real=False)
    assert float(fid.compute()) == pytest.approx(0.0, abs=1e-2)


def test_to_uint8_accepts_vq_range_tensors_and_pil():
    from PIL import Image

    x = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1)
    assert to_uint8(x).view(-1).tolist() == [0, 128, 255]
    pil = Image.new("RGB", (3, 2), (1, 2, 3))
    out = to_uint8([pil])
    assert out.shape == (1, 3, 2, 3) and out[0, :, 0, 0].tolist() == [1, 2, 3]
