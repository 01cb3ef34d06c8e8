"""``ofa-predict``: image + instruction → text, or a box drawn onto a PNG (Hydra main, version_base 1.3)."""
from __future__ import annotations

import json
from pathlib import Path

import hydra
from omegaconf import DictConfig

from ofa_lightning.paths import CONF_DIR


def run(cfg: DictConfig) -> dict:
    from PIL import Image, ImageDraw

    from ofa_lightning.api import OFA

    ofa = OFA.load(cfg.ckpt_path, tokenizer=cfg.tokenizer, image_size=cfg.image_size)
    pred = ofa.generate(cfg.image, cfg.prompt, task=cfg.decoding)
    result = {"prompt": cfg.prompt, "text": pred.text, "box": pred.box, "score": pred.score}
    if pred.box is not None and cfg.image is not None and cfg.out:
        image = Image.open(cfg.image).convert("RGB")
        x0, y0, x1, y1 = pred.box
        ImageDraw.Draw(image).rectangle([min(x0, x1), min(y0, y1), max(x0, x1), max(y0, y1)], outline=(255, 0, 0), width=3)
        Path(cfg.out).parent.mkdir(parents=True, exist_ok=True)
        image.save(cfg.out)
        result["image_with_box"] = str(cfg.out)
    out_dir = Path(cfg.paths.output_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "prediction.json").write_text(json.dumps(result, indent=1))
    return result


@hydra.main(config_path=str(CONF_DIR), config_name="predict", version_base="1.3")
def main(cfg: DictConfig) -> None:
    result = run(cfg)
    print(result["text"] if result["box"] is None else f"{result['text']}  box={[round(v, 1) for v in result['box']]}")
    if "image_with_box" in result:
        print(result["image_with_box"])


if __name__ == "__main__":
    main()
