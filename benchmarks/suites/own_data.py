"""Conversion speed of your own data: `ofa-prepare table` on 480 px JPEGs (images/s, and per core).

    python benchmarks/suites/own_data.py --num-images 2000 --workers 1 4
    python benchmarks/suites/own_data.py --json own_data.json

Makes N distinct 480 px JPEGs (crops of scikit-image's sample photographs, resized so the long side is 480) and a
captions.csv, then times the whole `ofa-prepare table --task caption` run (reading, checking and sharding every
image; the process pool's start included) for each worker count. Reports images/s and images/s per worker; with
one worker the conversion runs in this process, on one core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import tempfile
import time
from pathlib import Path

from PIL import Image

SOURCES = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field", "retina")


def make_images(folder: Path, num_images: int, seed: int = 0) -> Path:
    """N distinct 480 px JPEGs (quality 90) + captions.csv; returns the CSV."""
    import skimage.data

    rng = random.Random(seed)
    photos = [Image.fromarray(getattr(skimage.data, name)()).convert("RGB") for name in SOURCES]
    rows = ["file,caption"]
    for i in range(num_images):
        photo = photos[i % len(photos)]
        w, h = photo.size
        cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
        x, y = rng.randrange(w - cw + 1), rng.randrange(h - ch + 1)
        crop = photo.crop((x, y, x + cw, y + ch))
        scale = 480 / max(crop.size)
        crop = crop.resize((round(crop.width * scale), round(crop.height * scale)), Image.BICUBIC)
        crop.save(folder / f"img{i:06d}.jpg", quality=90)
        rows.append(f"img{i:06d}.jpg,photo number {i} from {SOURCES[i % len(SOURCES)]}")
    csv = folder / "captions.csv"
    csv.write_text("\n".join(rows) + "\n")
    return csv


def time_conversion(csv: Path, out: Path, workers: int) -> float:
    from data_recipes.cli import run

    start = time.perf_counter()
    manifest = run(
        [
            "table",
            "--input",
            str(csv),
            "--task",
            "caption",
            "--image-column",
            "file",
            "--quiet",
            "--workers",
            str(workers),
            "--overwrite",
            "--out",
            str(out),
        ]
    )
    elapsed = time.perf_counter() - start
    assert manifest["splits"]["train"]["num_skipped"] == 0, manifest["splits"]["train"]["skip_reasons"]
    return elapsed


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--num-images", type=int, default=2000)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, min(4, os.cpu_count() or 1)])
    parser.add_argument("--rounds", type=int, default=2, help="timed runs per worker count (best kept)")
    parser.add_argument("--json", type=Path, default=None, help="also write the results here")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        csv = make_images(folder, args.num_images)
        size_mb = sum(p.stat().st_size for p in folder.glob("*.jpg")) / 2**20
        results = []
        for workers in args.workers:
            seconds = min(time_conversion(csv, folder / f"out{workers}", workers) for _ in range(args.rounds))
            rate = args.num_images / seconds
            results.append(
                {
                    "workers": workers,
                    "seconds": round(seconds, 3),
                    "images_per_s": round(rate, 1),
                    "images_per_s_per_core": round(rate / workers, 1),
                }
            )
    report = {
        "benchmark": "ofa-prepare table, 480 px JPEGs",
        "num_images": args.num_images,
        "jpeg_mb": round(size_mb, 1),
        "cpu_count": os.cpu_count(),
        "machine": platform.processor() or platform.machine(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "results": results,
    }
    print(json.dumps(report, indent=1))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=1) + "\n")
    return report


if __name__ == "__main__":
    main()
