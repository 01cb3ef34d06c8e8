"""Load test of ``ofa-serve`` on localhost: dynamic batching against one-at-a-time, in the same run.

For each mode (``max_batch=8`` batched, ``max_batch=1`` one at a time) it starts ``ofa-serve`` on a free port of
127.0.0.1, sends a few warm-up requests, then ``--requests`` requests (default 200) with ``--concurrency`` (default 8)
in flight, and stops the server. It prints a markdown table (throughput, p50 / p95 latency, mean batch size) and
writes the figures as JSON (``--out``). Bounded: it ends by itself.

    python benchmarks/suites/serve_load.py --ckpt runs/demo/my_run/checkpoints/last.ckpt --task caption
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "harness"))
from machine import cpu_model  # noqa: E402

MODES = {"batched (max_batch=8)": 8, "one at a time (max_batch=1)": 1}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))]


async def _load(url: str, image: bytes, task: str, instruction: str, requests: int, concurrency: int) -> dict:
    import httpx

    latencies: list[float] = []
    batch_sizes: list[int] = []
    failures = 0
    gate = asyncio.Semaphore(concurrency)

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:

        async def one() -> None:
            nonlocal failures
            async with gate:
                start = time.perf_counter()
                response = await client.post(
                    "/predict",
                    files={"image": ("image.jpg", image, "image/jpeg")},
                    data={"task": task, "instruction": instruction},
                )
                latencies.append(time.perf_counter() - start)
                if response.status_code == 200:
                    batch_sizes.append(response.json()["batch_size"])
                else:
                    failures += 1

        for _ in range(concurrency):  # warm-up
            await one()
        latencies.clear(), batch_sizes.clear()
        start = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(requests)))
        wall = time.perf_counter() - start
    return {
        "requests": requests,
        "concurrency": concurrency,
        "failures": failures,
        "wall_s": round(wall, 2),
        "throughput_rps": round(requests / wall, 2),
        "p50_ms": round(1000 * _percentile(latencies, 0.5), 1),
        "p95_ms": round(1000 * _percentile(latencies, 0.95), 1),
        "mean_batch": round(statistics.mean(batch_sizes), 2) if batch_sizes else None,
    }


def _serve(args: argparse.Namespace, max_batch: int) -> tuple[subprocess.Popen, str]:
    import httpx

    port = _free_port()
    command = [
        sys.executable,
        "-m",
        "ofa_lightning.cli.serve",
        f"ckpt_path={args.ckpt}",
        f"port={port}",
        f"max_batch={max_batch}",
        f"wait_ms={args.wait_ms}",
        f"max_queue={max(64, 2 * args.concurrency)}",
        f"device={args.device}",
        "log_level=warning",
    ]
    if args.tokenizer:
        command.append(f"tokenizer_path={args.tokenizer}")
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, cwd=args.workdir)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 300
    while time.time() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"ofa-serve exited: {proc.stderr.read()[-2000:]}")
        try:
            if httpx.get(url + "/health", timeout=2).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit("ofa-serve did not answer /health within 300 s")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ckpt", required=True, help="checkpoint to serve")
    parser.add_argument("--tokenizer", default=None, help="OFA's BPE folder (converted/OFA checkpoints)")
    parser.add_argument("--image", type=Path, default=None, help="image to send (default: a drawn 96 px shapes scene)")
    parser.add_argument("--task", default="caption")
    parser.add_argument("--instruction", default="")
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--wait-ms", type=float, default=10.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--out", type=Path, default=None, help="default: benchmarks/results/serve_load_<task>.json")
    args = parser.parse_args(argv)
    if args.out is None:
        args.out = Path(__file__).resolve().parents[1] / "results" / f"serve_load_{args.task}.json"
        args.out.parent.mkdir(parents=True, exist_ok=True)
    args.ckpt = str(Path(args.ckpt).resolve())
    args.workdir = tempfile.mkdtemp(prefix="serve_load_")  # the servers' run dirs (logs) go here
    image = args.image.read_bytes() if args.image else _shapes_image()

    rows = {}
    for label, max_batch in MODES.items():
        proc, url = _serve(args, max_batch)
        try:
            rows[label] = asyncio.run(_load(url, image, args.task, args.instruction, args.requests, args.concurrency))
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    batched, single = rows.values()
    speedup = batched["throughput_rps"] / single["throughput_rps"]
    print(
        f"ofa-serve load test: {args.requests} '{args.task}' requests at concurrency {args.concurrency}, "
        f"{Path(args.ckpt).name}, {os.cpu_count()} CPUs"
    )
    print("| mode | throughput (req/s) | p50 (ms) | p95 (ms) | mean batch | failures |")
    print("|---|---:|---:|---:|---:|---:|")
    for label, row in rows.items():
        print(
            f"| {label} | {row['throughput_rps']} | {row['p50_ms']} | {row['p95_ms']} | {row['mean_batch']} | "
            f"{row['failures']} |"
        )
    print(f"batched / one-at-a-time throughput: {speedup:.2f}x")
    result = {
        "task": args.task,
        "date": time.strftime("%Y-%m-%d"),
        "machine": f"{cpu_model()}, {os.cpu_count()} CPUs",
        "checkpoint": Path(args.ckpt).name,
        "rows": rows,
        "speedup": round(speedup, 2),
    }
    args.out.write_text(json.dumps(result, indent=1))
    return 0


def _shapes_image() -> bytes:
    import io

    from PIL import Image, ImageDraw

    image = Image.new("RGB", (96, 96), (240, 240, 240))
    draw = ImageDraw.Draw(image)
    draw.ellipse([10, 12, 40, 42], fill=(220, 30, 30))
    draw.rectangle([55, 50, 85, 80], fill=(30, 60, 220))
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG")
    return buffer.getvalue()


if __name__ == "__main__":
    raise SystemExit(main())
