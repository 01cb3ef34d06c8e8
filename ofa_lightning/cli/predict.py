"""``ofa-predict``: image + instruction → text, or a box drawn onto a PNG; ``"what is the complete image? caption:
..."`` → a generated PNG (``vq_path``, optional ``clip_path``) (Hydra main, version_base 1.3)."""

from __future__ import annotations

import json
from pathlib import Path

from omegaconf import DictConfig

from ofa_lightning.cli._hydra import hydra_command


def run(cfg: DictConfig) -> dict:
    from PIL import Image, ImageDraw

    from ofa_lightning.api import OFA

    ofa = OFA.load(cfg.ckpt_path, tokenizer=cfg.tokenizer_path, image_size=cfg.image_size, base=cfg.get("base_path"))
    caption = text_to_image_caption(cfg.prompt, cfg.decoding)
    if caption is not None:
        return _text_to_image(cfg, ofa, caption)
    prompt = cfg.prompt
    if cfg.get("region") is not None:  # grounded QA: the region (pixels) as 4 bins at {region} (tasks/grounded_qa.py)
        from ofa_lightning.tasks.grounded_qa import fill_region

        prompt = fill_region(prompt, list(cfg.region), cfg.image, ofa.tokenizer.num_bins)
    pred = ofa.generate(cfg.image, prompt, task=cfg.decoding)
    result = {"prompt": prompt, "text": pred.text, "box": pred.box, "score": pred.score}
    if pred.box is not None and cfg.image is not None and cfg.out:
        image = Image.open(cfg.image).convert("RGB")
        x0, y0, x1, y1 = pred.box
        ImageDraw.Draw(image).rectangle(
            [min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=(255, 0, 0), width=3
        )
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        image.save(cfg.out)
        result["image_with_box"] = str(cfg.out)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prediction.json").write_text(json.dumps(result, indent=1))
    return result


T2I_PREFIX = "what is the complete image? caption:"


def text_to_image_caption(prompt: str, decoding: str | None) -> str | None:
    """The caption of a text-to-image instruction (``"what is the complete image? caption: ..."``, or any prompt with
    ``decoding=text_to_image``), else None."""
    text = " ".join(str(prompt).split())
    if text.lower().startswith(T2I_PREFIX):
        return text[len(T2I_PREFIX) :].strip()
    return text if decoding == "text_to_image" else None


def _text_to_image(cfg: DictConfig, ofa, caption: str) -> dict:
    """Caption → sampled code grids → VQ decode → CLIP rerank → the best image as a PNG (``out``)."""
    if not cfg.get("vq_path"):
        raise ValueError(
            "text-to-image needs vq_path=<VQ checkpoint> (ofa_lightning.vq: ours, or taming's with "
            "vq_config=<model.yaml>)"
        )
    from ofa_lightning.vq import VQModel

    vq = VQModel.load(cfg.vq_path, config=cfg.get("vq_config"))
    samples = ofa.generate_image(
        caption,
        vq,
        reranker=cfg.get("clip_path"),
        num_samples=int(cfg.num_samples),
        top_k=int(cfg.top_k),
        top_p=float(cfg.top_p),
        seed=cfg.get("seed"),
    )
    best = samples[0]
    out = Path(cfg.out or Path(cfg.paths.output_dir) / "prediction.png")
    out.parent.mkdir(parents=True, exist_ok=True)
    best.image.save(out)
    result = {
        "prompt": cfg.prompt,
        "caption": caption,
        "text": str(out),
        "box": None,
        "score": best.score,
        "clip_score": best.clip_score,
        "image": str(out),
        "num_samples": len(samples),
        "reranked": cfg.get("clip_path") is not None,
    }
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prediction.json").write_text(json.dumps(result, indent=1))
    return result


def report(cfg: DictConfig) -> None:
    result = run(cfg)
    print(result["text"] if result["box"] is None else f"{result['text']}  box={[round(v, 1) for v in result['box']]}")
    if "image_with_box" in result:
        print(result["image_with_box"])


main = hydra_command("predict", report, prog="ofa-predict")


if __name__ == "__main__":
    main()
