"""Try a checkpoint on one image: caption, VQA, grounding, grounded QA and grounded captioning, drawn.

Grounded QA (OFA's blog): a question about a region, the region given as its four location bins after the
question, e.g. ``" what color is the object in the region? region: <bin_12> <bin_40> <bin_300> <bin_420>"``.
The bins are the box quantised over the model's (squashed) input image, as OFA does: each coordinate is scaled to
the input frame, then ``round(c / size · (num_bins - 1))`` (:func:`region_tokens`). The same string after OFA's
grounded-captioning instruction asks the model to describe the region.

Checkpoints: ours (``<run>/checkpoints/last.ckpt``: the tokenizer and the image size come from the run dir), a
file written by ``ofa-convert`` (pass OFA's BPE folder as the tokenizer), or an OFA fairseq / HF ``.pt``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ofa_lightning.api import OFA, PROMPTS
from ofa_lightning.tokenizer import box_to_tokens

from .plots import PREDICTION_COLOR, draw_box, save_figure, show_image
from .runs import Run, attach_images, is_run_dir, load_predictions, load_run

__all__ = [
    "load_model",
    "run_dir_of",
    "region_tokens",
    "grounded_qa_prompt",
    "grounded_caption_prompt",
    "TryResult",
    "try_prompts",
    "plot_try",
    "example_inputs",
    "synthetic_scene",
    "export_fairseq_layout",
    "REGION_COLOR",
    "REGION_QUESTION",
]

REGION_COLOR = "#2b83ba"
REGION_QUESTION = "what color is the object in the region?"


def run_dir_of(checkpoint: str | Path) -> Path | None:
    """The run dir a checkpoint belongs to (``<run>/checkpoints/<file>.ckpt``), or None."""
    for parent in Path(checkpoint).resolve().parents:
        if is_run_dir(parent):
            return parent
    return None


def load_model(
    checkpoint: str | Path,
    tokenizer: Any = None,
    image_size: int | None = None,
    device: str = "cpu",
    prompt_types: dict[str, str] | None = None,
    tasks: Any = None,
) -> OFA:
    """``OFA.load`` with the run's input size (``data.task_options.image_size``) when the checkpoint is ours and
    no ``image_size`` is given (OFA's per-task sizes otherwise: 480 caption/VQA, 512 grounding). ``prompt_types``:
    see ``OFA.load`` (a converted checkpoint does not know how its model was prompted in training)."""
    run_dir = run_dir_of(checkpoint)
    if image_size is None and run_dir is not None:
        options = (load_run(run_dir).config.get("data") or {}).get("task_options") or {}
        image_size = options.get("image_size")
    return OFA.load(
        checkpoint,
        tokenizer=tokenizer,
        image_size=int(image_size) if image_size else None,
        device=device,
        prompt_types=prompt_types,
        tasks=tasks,
    )


def export_fairseq_layout(checkpoint: str | Path, out: str | Path) -> Path:
    """Write our checkpoint's weights as OFA's fairseq checkpoints hold them (``{"model": state_dict}`` with
    fairseq parameter names, and the computation options under ``cfg["model"]``): a small stand-in for
    ``ofa_large.pt`` to show the ``ofa-convert`` path on."""
    import torch

    data = torch.load(Path(checkpoint), map_location="cpu", weights_only=True)
    state = {k[len("model.") :]: v for k, v in data["state_dict"].items() if k.startswith("model.")}
    if not state:
        raise ValueError(f"{checkpoint} holds no model.* weights (not an ofa-train checkpoint?)")
    from ofa_lightning.weights.convert import ARCH_OPTIONS

    config = data.get("hyper_parameters", {}).get("model_config", {})
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    # fairseq records the model arguments beside the weights: cfg["model"] (a plain dict in OFA's checkpoints)
    torch.save({"model": state, "cfg": {"model": {k: config[k] for k in ARCH_OPTIONS if k in config}}}, out)
    return out


# ------------------------------------------------------------------------------------------------ prompts
def _size_of(image: Any) -> tuple[int, int]:
    if hasattr(image, "size") and isinstance(image.size, tuple):
        return int(image.size[0]), int(image.size[1])
    width, height = image
    return int(width), int(height)


def region_tokens(box: Any, image: Any, num_bins: int, frame: int = 512) -> str:
    """``"<bin_a> <bin_b> <bin_c> <bin_d>"`` for a pixel box of ``image`` (a PIL image or its ``(width,
    height)``): the box is scaled to the squashed ``frame``-pixel input, then quantised over it (OFA's rule)."""
    width, height = _size_of(image)
    x0, y0, x1, y1 = (float(v) for v in box)
    scaled = [x0 * frame / width, y0 * frame / height, x1 * frame / width, y1 * frame / height]
    return box_to_tokens(scaled, max_image_size=frame, num_bins=num_bins)


def grounded_qa_prompt(question: str, box: Any, image: Any, num_bins: int) -> str:
    """OFA's grounded-QA instruction: ``" <question>? region: <bin_a> <bin_b> <bin_c> <bin_d>"``."""
    question = question.strip().rstrip("?").strip()
    if not question:
        raise ValueError("grounded QA needs a question")
    return f" {question}? region: {region_tokens(box, image, num_bins)}"


def grounded_caption_prompt(box: Any, image: Any, num_bins: int) -> str:
    """OFA's grounded-captioning instruction for a region: ``" what does the region describe? region: <bins>"``."""
    return PROMPTS["grounded_caption"].format(region=region_tokens(box, image, num_bins))


@dataclass
class TryResult:
    kind: str  # caption | vqa | grounding | grounded_qa | grounded_caption
    prompt: str
    text: str
    box: list[float] | None = None  # predicted box (grounding), pixels of the input image
    region: list[float] | None = None  # the region asked about (grounded QA / captioning)


def try_prompts(
    model: OFA,
    image: Any,
    question: str | None = None,
    expression: str | None = None,
    region: Any = None,
    region_question: str | None = REGION_QUESTION,
    **overrides: Any,
) -> list[TryResult]:
    """Run every applicable instruction on ``image``: caption always; VQA with ``question``; grounding with
    ``expression``; with ``region``: grounded QA (``region_question`` about it) and grounded captioning."""
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.open(image)
    image = image.convert("RGB")
    bins = model.tokenizer.num_bins
    jobs: list[tuple[str, str, str, Any]] = [("caption", model.task("caption").instruction(), "caption", None)]
    if question:  # the instructions as each task's evaluation writes them
        jobs.append(("vqa", model.task("vqa").instruction(question), "vqa", None))
    if expression:
        jobs.append(("grounding", model.task("grounding").instruction(expression), "grounding", None))
    if region is not None:
        region = [float(v) for v in region]
        if region_question:
            jobs.append(("grounded_qa", grounded_qa_prompt(region_question, region, image, bins), "vqa", region))
        jobs.append(("grounded_caption", grounded_caption_prompt(region, image, bins), "grounded_caption", region))
    results = []
    for kind, prompt, task, asked in jobs:
        prediction = model.generate(image, prompt, task, **overrides)
        results.append(TryResult(kind, prompt, prediction.text, prediction.box if kind == "grounding" else None, asked))
    return results


def plot_try(image: Any, results: list[TryResult], ncols: int = 3, save: str | Path | None = None):
    """One panel per result: the image, the predicted box (red) for grounding, the region asked about (blue) for
    grounded QA / captioning; the title is the instruction and the answer."""
    import math
    import textwrap

    import matplotlib.pyplot as plt
    from PIL import Image

    if not isinstance(image, Image.Image):
        image = Image.open(image).convert("RGB")
    if not results:
        raise ValueError("no results to draw")
    ncols = max(1, min(ncols, len(results)))
    nrows = math.ceil(len(results) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.4 * ncols, 4.2 * nrows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, result in zip(axes.flat, results):
        ax.axis("on")
        show_image(ax, image)
        if result.region is not None:
            draw_box(ax, result.region, REGION_COLOR, "region")
        if result.box is not None:
            draw_box(ax, result.box, PREDICTION_COLOR, "predicted")
        prompt = result.prompt.split(" region:")[0].strip()
        answer = (", ".join(f"{v:.0f}" for v in result.box) if result.box is not None else result.text) or "(empty)"
        ax.set_title(f"{result.kind}\n" + "\n".join(textwrap.wrap(f"→ {answer}", 34)[:2]), fontsize=9)
        ax.set_xlabel("\n".join(textwrap.wrap(prompt, 40)[:3]), fontsize=7)
    fig.tight_layout()
    return save_figure(fig, save)


# ------------------------------------------------------------------------------------------------ inputs
def synthetic_scene(size: int = 128):
    """A small scene (a red circle left, a blue square right) and inputs about it: ``(image, question,
    expression, region)`` (the region: the circle) — for trying a checkpoint without any data at hand."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (size, size), (235, 225, 200))
    draw = ImageDraw.Draw(image)
    s = size / 128
    circle = [12 * s, 40 * s, 56 * s, 84 * s]
    square = [74 * s, 34 * s, 118 * s, 78 * s]
    draw.ellipse(circle, fill=(215, 40, 40))
    draw.rectangle(square, fill=(40, 70, 215))
    return image, "how many shapes are there?", "the blue square", circle


def example_inputs(run: Run | str | Path | None, stage: str = "test") -> tuple[Any, str, str, list[float]]:
    """``(image, question, expression, region)`` from a run's evaluation data: the image of its first grounding
    row, that row's expression, its reference box as the region and a generic question. Falls back to
    :func:`synthetic_scene` when the run has no grounding predictions or their shards are gone."""
    if run is not None and not isinstance(run, Run):
        run = load_run(run)
    if run is None:
        return synthetic_scene()
    predictions = load_predictions(run.path, stage)
    grounding = {s: rows[:1] for s, rows in predictions.items() if rows and rows[0].get("task") == "grounding"}
    if not grounding:
        return synthetic_scene()
    attach_images(run, grounding, stage, limit=1)
    row = next(iter(grounding.values()))[0]
    if row.get("image") is None or row.get("reference") is None:
        return synthetic_scene()
    prompt = row.get("prompt") or ""
    expression = prompt.split('"')[1].strip() if prompt.count('"') >= 2 else "the shape"
    return row["image"], "how many shapes are there?", expression, [float(v) for v in row["reference"]]
