"""Shared set-up of the benchmark: sizes, the synthetic batch, model builders, timers.

Both implementations see the same batch: 8 samples, 256 px images, 20 source
tokens and 20 target tokens (each row padded to 20; lengths vary per row as
in a real caption batch, see :func:`make_batch`).
"""

from __future__ import annotations

import os
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]
RESULTS_DIR = REPO / "benchmarks" / "results"  # every suite writes here (untracked); harness/report.py reads it
for _p in (REPO, REPO / "tests"):  # ofa_lightning (editable install anyway) and tests/modelscope_ref.py
    if str(_p) not in sys.path:
        sys.path.insert(0, str(_p))

PAD, BOS, EOS = 1, 0, 2
VOCAB = 59457
BATCH = 8
IMAGE_PX = 256
SRC_LEN = 20
TGT_LEN = 20
THREADS = 2

# ModelScope OFAConfig fields for each size (medium: d 512, 4+4 layers, 8 heads, ffn 2048, resnet101).
MS_SIZES = {
    "tiny": dict(
        d_model=256,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=4,
        decoder_attention_heads=4,
        encoder_ffn_dim=1024,
        decoder_ffn_dim=1024,
        resnet_type="resnet50",
    ),
    "medium": dict(
        d_model=512,
        encoder_layers=4,
        decoder_layers=4,
        encoder_attention_heads=8,
        decoder_attention_heads=8,
        encoder_ffn_dim=2048,
        decoder_ffn_dim=2048,
        resnet_type="resnet101",
    ),
}
# OFA's fine-tuning regularisation: dropout 0.1 on residual branches, none in attention / FFN activations.
TRAIN_DROPOUT = dict(dropout=0.1, attention_dropout=0.0, activation_dropout=0.0)
EVAL_DROPOUT = dict(dropout=0.0, attention_dropout=0.0, activation_dropout=0.0)


def setup_threads(n: int = THREADS) -> None:
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:  # already set in this process
        pass


@dataclass
class Batch:
    input_ids: torch.Tensor  # (B, 20) source tokens, BOS ... EOS then pads
    patch_images: torch.Tensor  # (B, 3, 256, 256)
    patch_masks: torch.Tensor  # (B,) bool, all True
    prev_output_tokens: torch.Tensor  # (B, 20) decoder input: BOS + target[:-1]
    target: torch.Tensor  # (B, 20) target tokens ending in EOS, padded with PAD

    @property
    def num_target_tokens(self) -> int:
        return int(self.target.ne(PAD).sum())


def make_batch(
    seed: int = 0,
    batch: int = BATCH,
    px: int = IMAGE_PX,
    src_len: int = SRC_LEN,
    tgt_len: int = TGT_LEN,
    full: bool = False,
) -> Batch:
    """A caption-like batch: per-row lengths in [10, 20] (the longest row is 20), so ~25 % padding.

    ``full=True`` gives every row all 20 tokens (no padding at all).
    """
    g = torch.Generator().manual_seed(seed)
    words = lambda n: torch.randint(4, 50260, (n,), generator=g)  # noqa: E731  BPE range, no specials
    src = torch.full((batch, src_len), PAD, dtype=torch.long)
    tgt = torch.full((batch, tgt_len), PAD, dtype=torch.long)
    prev = torch.full((batch, tgt_len), PAD, dtype=torch.long)
    for i in range(batch):
        ls = src_len if (full or i == 0) else int(torch.randint(10, src_len + 1, (1,), generator=g))
        lt = tgt_len if (full or i == 0) else int(torch.randint(10, tgt_len + 1, (1,), generator=g))
        src[i, :ls] = torch.cat([torch.tensor([BOS]), words(ls - 2), torch.tensor([EOS])])
        t = torch.cat([words(lt - 1), torch.tensor([EOS])])
        tgt[i, :lt] = t
        prev[i, :lt] = torch.cat([torch.tensor([BOS]), t[:-1]])
    images = torch.randn(batch, 3, px, px, generator=g)
    return Batch(src, images, torch.ones(batch, dtype=torch.bool), prev, tgt)


# ------------------------------------------------------------------ models
def build_ours(size: str, train: bool, seed: int = 0, **overrides):
    from ofa_lightning.model import OFAConfig
    from ofa_lightning.speed import build_model

    torch.manual_seed(seed)
    drop = TRAIN_DROPOUT if train else EVAL_DROPOUT
    model = build_model(OFAConfig.from_name(size, **{**drop, **overrides}))  # the default speed profile
    return model.train(train)


def build_peer(size: str, train: bool, seed: int = 0):
    from modelscope_ref import build_ms_model

    drop = TRAIN_DROPOUT if train else EVAL_DROPOUT
    model, _ = build_ms_model({**MS_SIZES[size], **drop}, seed=seed)
    return model.train(train)


def ours_from_peer(peer):
    """Our model holding exactly the peer's weights (so generation does the same work and output)."""
    from ofa_lightning.speed import apply_speed
    from ofa_lightning.weights.convert import from_modelscope_state_dict, infer_config

    sd = peer.state_dict()
    return apply_speed(from_modelscope_state_dict(sd, infer_config(sd, **EVAL_DROPOUT))).eval()


# ------------------------------------------------------------------ timing
def time_calls(
    fn: Callable[[], object], warmup: int, repeats: int, label: str = "", log: Callable[[str], None] | None = None
) -> list[float]:
    """Run ``fn`` ``warmup`` times untimed, then ``repeats`` times; returns wall times in seconds."""
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        if log:
            log(f"  {label} warm-up {i + 1}/{warmup}: {time.perf_counter() - t0:.3f} s")
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        if log:
            log(f"  {label} {i + 1}/{repeats}: {times[-1]:.3f} s")
    return times


def median(xs: list[float]) -> float:
    return float(statistics.median(xs))


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def peak_rss_mb() -> float:
    import resource

    kb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kilobytes on Linux
    return kb / 1024.0


def current_rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/statm") as f:
            pages = int(f.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


_TCMALLOC: list = []  # memo: [path or None]


def find_tcmalloc() -> str | None:
    """Path of gperftools' tcmalloc for ``LD_PRELOAD``, or None. ``OFA_TCMALLOC`` (a path, or ``none``) wins;
    otherwise ``get_tcmalloc.sh`` looks for a system copy or one under ``.cache/tcmalloc`` and fetches Debian's
    libtcmalloc-minimal4 there if needed (no root). Why: see docs/benchmarks.md."""
    if not _TCMALLOC:
        env = os.environ.get("OFA_TCMALLOC")
        if env is not None:
            path = None if env.lower() in ("", "none", "0", "off") else env
            if path and not Path(path).is_file():
                raise FileNotFoundError(f"OFA_TCMALLOC={path!r} is not a file")
        else:
            import subprocess

            script = Path(__file__).resolve().parent / "get_tcmalloc.sh"
            try:
                proc = subprocess.run(
                    ["bash", str(script), str(REPO / ".cache" / "tcmalloc")],
                    capture_output=True,
                    text=True,
                    timeout=120,
                )
                path = proc.stdout.strip() if proc.returncode == 0 and proc.stdout.strip() else None
                if path is None:
                    log(f"tcmalloc not available ({proc.stderr.strip() or 'no path'}): the lean rows use glibc")
            except (OSError, subprocess.TimeoutExpired) as exc:
                path = None
                log(f"tcmalloc lookup failed ({exc}): the lean rows use glibc")
        _TCMALLOC.append(path)
    return _TCMALLOC[0]
