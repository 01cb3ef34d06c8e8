"""Image-generation metrics through torchmetrics: CLIP score, FID and Inception Score (OFA paper, Sec. 4.1:
text-to-image is reported as FID / IS on COCO with CLIP-reranked samples).

Everything runs offline or not at all — weights always come from a path, nothing is downloaded:

* :func:`clip_score_metric` — ``torchmetrics.multimodal.CLIPScore`` (100 × cosine, floored at 0) over a
  :class:`~ofa_lightning.generation.rerank.ClipReranker` (transformers CLIP from a local folder, or random init for
  tests) instead of a hub name.
* :func:`fid_metric` / :func:`inception_score_metric` — ``FrechetInceptionDistance`` / ``InceptionScore`` with either a
  feature extractor you pass (any ``nn.Module`` mapping uint8 images to (N, d) features / logits), or torch-fidelity's
  Inception-v3 with its weights file from ``weights_path`` (``pt_inception-2015-12-05-6726825d.pth``).

When a metric cannot run (no torch-fidelity, no weights file, no transformers), the builder raises
:class:`MetricUnavailable` whose message is the reason; :func:`build_image_metrics` collects those reasons so a run can
log what was skipped instead of a made-up number.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

__all__ = [
    "MetricUnavailable",
    "clip_score_metric",
    "fid_metric",
    "inception_score_metric",
    "build_image_metrics",
    "inception_extractor",
    "to_uint8",
]


class MetricUnavailable(RuntimeError):
    """The metric cannot run offline here; the message says why."""


def to_uint8(images: Tensor | Sequence[Any]) -> Tensor:
    """PIL images, or float tensors in [-1, 1] (VQ output) / [0, 1], or uint8 tensors → (N, 3, H, W) uint8."""
    if isinstance(images, Tensor):
        if images.dtype == torch.uint8:
            return images
        x = images.float()
        if x.min() < 0:
            x = (x + 1) / 2
        return (x.clamp(0, 1) * 255).round().to(torch.uint8)
    out = []
    for image in images:
        if isinstance(image, Tensor):
            out.append(to_uint8(image[None])[0])
            continue
        image = image.convert("RGB")
        w, h = image.size
        out.append(torch.frombuffer(bytearray(image.tobytes()), dtype=torch.uint8).view(h, w, 3).permute(2, 0, 1))
    return torch.stack(out)


# ------------------------------------------------------------------------------------------------------- CLIP score
class _RerankerProcessor:
    """The ``processor(images=..., text=...)`` interface torchmetrics' CLIPScore calls, over a ClipReranker."""

    def __init__(self, reranker: Any):
        self.reranker = reranker

    def __call__(self, images: Any = None, text: Any = None, **_: Any) -> dict[str, Tensor]:
        from PIL import Image

        if images is not None:
            pils = [Image.fromarray(to_uint8(i[None])[0].permute(1, 2, 0).numpy()) for i in images]
            return {"pixel_values": self.reranker.pixel_values(pils).cpu()}
        return self.reranker.tokenize([text] if isinstance(text, str) else list(text))


def clip_score_metric(clip_path: str | os.PathLike | None = None, reranker: Any = None, **kwargs: Any):
    """``torchmetrics.multimodal.CLIPScore`` over CLIP weights from ``clip_path`` (or a given ``ClipReranker``).

    ``update(images, captions)``: images as uint8 / float tensors (N, 3, H, W); ``compute()`` = mean of
    100 × max(cos, 0)."""
    try:
        from torchmetrics.multimodal.clip_score import CLIPScore
    except (ImportError, ModuleNotFoundError) as exc:  # pragma: no cover
        raise MetricUnavailable(f"CLIP score: torchmetrics' multimodal metrics are unavailable ({exc})") from None
    if reranker is None:
        if clip_path is None:
            raise MetricUnavailable(
                "CLIP score: no CLIP weights (give clip_path, a folder saved with "
                "CLIPModel/CLIPProcessor.save_pretrained); hub downloads are not used"
            )
        if not Path(clip_path).is_dir():
            raise MetricUnavailable(f"CLIP score: CLIP folder {clip_path} does not exist")
        try:
            from ofa_lightning.generation.rerank import ClipReranker

            reranker = ClipReranker.from_pretrained(clip_path)
        except ImportError as exc:
            raise MetricUnavailable(f"CLIP score: {exc}") from None
    processor = _RerankerProcessor(reranker)
    return CLIPScore(model_name_or_path=lambda: (reranker.model, processor), **kwargs)


# ------------------------------------------------------------------------------------------------------- FID / IS
def inception_extractor(weights_path: str | os.PathLike | None, output: str) -> nn.Module:
    """torch-fidelity's Inception-v3 (as torchmetrics' default) with weights read from ``weights_path``.

    ``output``: "2048" (FID pool features) or "logits_unbiased" (IS)."""
    if weights_path is None:
        raise MetricUnavailable(
            "Inception-v3 weights path not given (torch-fidelity would download "
            "pt_inception-2015-12-05-6726825d.pth; offline runs need the file)"
        )
    if not Path(weights_path).is_file():
        raise MetricUnavailable(f"Inception-v3 weights file {weights_path} does not exist")
    try:
        from torchmetrics.image.fid import NoTrainInceptionV3
        from torchmetrics.utilities.imports import _TORCH_FIDELITY_AVAILABLE
    except ImportError as exc:  # pragma: no cover
        raise MetricUnavailable(f"torchmetrics image metrics unavailable ({exc})") from None
    if not _TORCH_FIDELITY_AVAILABLE:
        raise MetricUnavailable("Inception-v3 features need the torch-fidelity package (pip install torch-fidelity)")
    return NoTrainInceptionV3(
        name="inception-v3-compat", features_list=[output], feature_extractor_weights_path=str(weights_path)
    )


def fid_metric(
    feature_extractor: nn.Module | None = None, weights_path: str | os.PathLike | None = None, **kwargs: Any
):
    """``FrechetInceptionDistance`` over ``feature_extractor`` (uint8 images → (N, d)) or Inception-v3 weights from
    ``weights_path``. ``update(images, real=True/False)``; needs ≥ 2 images of each kind."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    feature = feature_extractor if feature_extractor is not None else inception_extractor(weights_path, "2048")
    return FrechetInceptionDistance(feature=feature, **kwargs)


def inception_score_metric(
    feature_extractor: nn.Module | None = None,
    weights_path: str | os.PathLike | None = None,
    splits: int = 10,
    **kwargs: Any,
):
    """``InceptionScore`` over a classifier (uint8 images → (N, classes) logits) or Inception-v3 weights from
    ``weights_path``. ``compute()`` → (mean, std) over ``splits``."""
    from torchmetrics.image.inception import InceptionScore

    feature = (
        feature_extractor if feature_extractor is not None else inception_extractor(weights_path, "logits_unbiased")
    )
    return InceptionScore(feature=feature, splits=splits, **kwargs)


def build_image_metrics(
    clip_path: str | None = None,
    inception_weights: str | None = None,
    *,
    reranker: Any = None,
    feature_extractor: nn.Module | None = None,
    classifier: nn.Module | None = None,
    splits: int = 10,
) -> tuple[dict[str, Any], dict[str, str]]:
    """({name: metric} that can run, {name: reason} for those that cannot) for clip_score, fid, inception_score."""
    metrics: dict[str, Any] = {}
    skipped: dict[str, str] = {}
    builders = {
        "clip_score": lambda: clip_score_metric(clip_path, reranker=reranker),
        "fid": lambda: fid_metric(feature_extractor, inception_weights),
        "inception_score": lambda: inception_score_metric(classifier, inception_weights, splits=splits),
    }
    for name, build in builders.items():
        try:
            metrics[name] = build()
        except MetricUnavailable as exc:
            skipped[name] = str(exc)
    return metrics, skipped
