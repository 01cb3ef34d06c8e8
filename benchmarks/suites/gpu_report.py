"""``gpu_results.md``: the GPU run's results as the section ``run.py`` includes in ``RESULTS.md``."""

from __future__ import annotations


def _pct(x) -> str:
    return "–" if x is None else f"{100 * x:.1f} %"


def _f(x, fmt: str = ".1f") -> str:
    return "–" if x is None else format(x, fmt)


def header(res: dict) -> list[str]:
    v = res.get("versions", {})
    soft = "; ".join(f"{k} {val}" for k, val in v.items() if val)
    return [
        "## GPU (`benchmarks/suites/gpu.py`)",
        "",
        f"{res['date']}; {res['device']}; {soft}; total {res['runtime_s']:.0f} s"
        + (" — **dry run on CPU with OFA-Tiny and toy shapes: not GPU figures**" if res["dry_run"] else "")
        + ".",
        "",
    ]


def main_table(res: dict) -> list[str]:
    t, p, g = res.get("train"), res.get("port_train"), res.get("generate")
    if not (t or p or g):
        return []
    L = ["| metric | ours | ModelScope port | ratio |", "|---|---:|---:|---:|"]
    if t:
        size = t["size"].capitalize()
        pb = p.get("batch") if p else None
        ours_same = (p or {}).get("ours_step_s_same_batch")
        L.append(
            f"| OFA-{size} bf16 training step, {t['px']} px, {t['tokens']} tokens, batch "
            f"{pb or t['batch']}: samples/s | {_f(pb / ours_same if ours_same else t['samples_per_s'])} | "
            f"{_f((p or {}).get('samples_per_s'))} | {_f((p or {}).get('speedup'), '.2f')}× |"
        )
        L.append(
            f"| peak memory per sample (GiB, peak allocated / batch) | {t['peak_mem_per_sample_gb']:.3f} | "
            f"{_f((p or {}).get('peak_mem_per_sample_gb'), '.3f')} | |"
        )
        L.append(
            f"| memory per extra sample (GiB, slope of peak allocated over batch {t['batch'] // 2} → "
            f"{t['batch']}) | {t['mem_per_sample_gb']:.3f} | | |"
        )
        L.append(f"| fixed memory (weights, grads, AdamW; GiB) | {t['fixed_mem_gb']:.2f} | | |")
        L.append(
            f"| achieved TFLOP/s (FLOPs of one step / step time, batch {t['batch']}) | {t['achieved_tflops']:.1f} | | |"
        )
        L.append(f"| MFU vs dense bf16 peak ({_f(t['peak_tflops'], '.0f')} TFLOP/s) | {_pct(t.get('mfu'))} | | |")
    if g and "ours" in g:
        L.append(
            f"| caption generation OFA-{g['size'].capitalize()}, beam {g['beam']} × {g['tokens']} tokens, "
            f"batch {g['batch']}: images/s | {g['ours']['images_per_s']:.1f} | "
            f"{g['port']['images_per_s']:.1f} | {g['speedup']:.2f}× |"
        )
        L.append(f"| same best hypothesis as the port (bf16) | {g['same_best_tokens']} | | |")
    return L + [""]


def targets(res: dict) -> list[str]:
    tg = res.get("targets")
    if not tg:
        return []
    names = {
        "mfu": "MFU of the default step",
        "train_speedup_vs_port": "training samples/s vs the port",
        "generate_speedup_vs_port": "caption generation images/s vs the port",
    }
    L = ["| target | value | needed | met |", "|---|---:|---:|---|"]
    for k, t in tg.items():
        val = _pct(t["value"]) if k == "mfu" else f"{t['value']:.2f}×"
        need = _pct(t["target"]) if k == "mfu" else f"{t['target']:.0f}×"
        L.append(f"| {names[k]} | {val} | ≥ {need} | {'yes' if t['met'] else '**no**'} |")
    L.append("")
    for t in tg.values():
        if t.get("bound"):
            L += [f"- **What bounds it** — {t['bound']}"]
    return L + [""]


def parity_and_variants(res: dict) -> list[str]:
    L = []
    t, par, rows = res.get("train") or {}, res.get("flex_parity"), res.get("variants")
    if par:
        L.append(
            f"Flex attention against the default kernel (fp32, TF32 off, batch {par['batch']}): loss "
            f"{par['loss_flex']:.6f} vs {par['loss_default']:.6f}, max \\|Δgrad\\| / max \\|grad\\| "
            f"{par['max_rel_grad_diff']:.1e} (tolerance {par['tolerance']:.0e})"
            + ("." if par["ok"] else " — **FAILED**: the flex rows below are not trustworthy.")
        )
        L.append("")
    if rows:
        L += [
            f"Training-step variants (OFA-{t.get('size', '?').capitalize()}, batch {t.get('batch', '?')}; MFU "
            "counted with the default step's FLOPs):",
            "",
            "| variant | s/step | samples/s | vs default | MFU | peak GiB | first step (s) |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        base_t = t.get("step_s")
        if t:
            L.append(
                f"| default (SDPA, dense bias, channels-last ResNet) | {t['step_s']:.3f} | "
                f"{t['samples_per_s']:.1f} | 1.00× | {_pct(t.get('mfu'))} | "
                f"{t['peak_mem_gb'].get(str(t['batch']), float('nan')):.2f} | – |"
            )
        for r in rows:
            if "skipped" in r or "error" in r:
                why = f"skipped: {r['skipped']}" if "skipped" in r else f"failed: {r['error']}"
                L.append(f"| {r['variant']} | {why} | | | | | |")
                continue
            ratio = f"{base_t / r['step_s']:.2f}×" if base_t else "–"
            L.append(
                f"| {r['variant']} | {r['step_s']:.3f} | {r['samples_per_s']:.1f} | {ratio} | "
                f"{_pct(r.get('mfu'))} | {r['peak_mem_gb']:.2f} | {r['first_step_s']:.1f} |"
            )
        L.append("")
    return L


def capacity(res: dict) -> list[str]:
    rows = res.get("max_batch")
    if not rows:
        return []
    L = ["| largest training batch that fits | px | batch |", "|---|---:|---:|"]
    for m in rows:
        what = f"OFA-{m['size'].capitalize()}, {m['mode']}"
        if "skipped" in m:
            L.append(f"| {what} | {m['px']} | skipped: {m['skipped']} |")
            continue
        note = "" if m["complete"] else (" (search capped)" if m["capped"] else " (search stopped by the time budget)")
        L.append(f"| {what} | {m['px']} | {m['largest_batch_found']}{note} |")
    return L + [""]


def markdown(res: dict) -> str:
    L = header(res) + main_table(res) + targets(res) + parity_and_variants(res) + capacity(res)
    for name, err in res.get("errors", {}).items():
        L.append(f"- part `{name}` failed: {err}")
    return "\n".join(L).rstrip("\n") + "\n"
