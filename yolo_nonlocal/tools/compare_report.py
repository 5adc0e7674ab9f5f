"""compare's reports: seeds aggregated to mean and standard deviation, compare.{csv,md,png}, the printed table.

Metric values are fractions (0..1) in the records, the CSV and the JSON; the Markdown table, the chart and
the printed table show percentages, ``n/a`` where COCO has no score (an area range without objects).
"""

from __future__ import annotations

import csv
import os
import statistics
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from yolo_nonlocal.utils.tables import format_table, percent

if TYPE_CHECKING:  # pragma: no cover
    from yolo_nonlocal.tools.compare import CompareSettings

__all__ = ["METRICS", "summarise", "write_csv", "markdown", "dataset_label", "chart", "result_table"]

METRICS = ("AP", "AP50", "AP75", "APs", "APm", "APl")


def _mean_std(values: Sequence[float | None]) -> tuple[float | None, float | None]:
    vals = [v for v in values if v is not None and v >= 0]  # COCO reports -1 for an empty area range
    if not vals:
        return None, None
    return statistics.fmean(vals), (statistics.stdev(vals) if len(vals) > 1 else 0.0)


def summarise(records: list[dict], role: str, spec: str, label: str) -> dict[str, Any]:
    """One model's entry of compare.json: every metric's mean and std over its runs (seeds), its cost, its runs."""
    rs = [r for r in records if r["role"] == role]
    entry: dict[str, Any] = {"model": label, "role": role, "spec": spec, "seeds": [r["seed"] for r in rs]}
    for k in METRICS:
        entry[k], entry[f"{k}_std"] = _mean_std([r.get(k) for r in rs])
    entry["params"] = rs[0]["params"]
    for k in ("gflops", "gflops_conv", "attention_gflops"):
        entry[k] = rs[0][k]
    entry["nonlocal_blocks"] = rs[0]["nonlocal_blocks"]
    entry["device"] = rs[0]["device"]
    entry["train_seconds"] = sum(r.get("train_seconds", 0.0) for r in rs)
    entry["runs"] = [
        {k: r.get(k) for k in ("seed", "run_dir", "weights", "results_csv", *METRICS)} for r in rs
    ]
    return entry


def pct(v: float | None, std: float | None = None) -> str:
    return "n/a" if v is None else percent(v, std)


def write_csv(path: Path, entries: list[dict]) -> None:
    """compare.csv: one row per model, metrics as fractions with their std."""
    cols = ["model", "role", "n_seeds"]
    for k in METRICS:
        cols += [k, f"{k}_std"]
    cols += ["params", "gflops", "attention_gflops", "latency_ms", "latency_ms_iqr", "device"]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(cols)
        for e in entries:
            row = {**e, "n_seeds": len(e["seeds"])}
            w.writerow(["" if row.get(c) is None else row.get(c) for c in cols])


def markdown(settings: CompareSettings, entries: list[dict], machine: dict) -> str:
    """compare.md: the table in %, the AP/APs differences judged against the seed spread, the machine."""
    n = len(settings.seeds)
    lines = [
        "# Non-local vs baseline",
        "",
        f"data `{settings.data}`, seeds {settings.seeds}, "
        + ", ".join(f"{k}={v}" for k, v in sorted(settings.train_args.items())),
        "",
        f"COCO box AP in % (mean ± std over {n} seed{'s' if n != 1 else ''}); "
        "GFLOPs at imgsz for one image, attention products included; batch-1 latency (median, fused model) "
        "on the device used, both models timed in turns.",
        "",
        "| model | AP | AP50 | AP75 | APs | APm | APl | params (M) | GFLOPs (attention) | latency ms |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for e in entries:
        cells = [pct(e[k], e[f"{k}_std"] if n > 1 else None) for k in METRICS]
        lines.append(
            f"| {e['model']} | "
            + " | ".join(cells)
            + f" | {e['params'] / 1e6:.2f} | {e['gflops']:.2f} ({e['attention_gflops']:.3f}) | "
            f"{e['latency_ms']:.1f} (IQR {e['latency_ms_iqr']:.1f}) |"
        )
    model, base = entries[1], entries[0]
    lines.append("")
    for k in ("AP", "APs"):
        if model[k] is None or base[k] is None:
            continue
        d = model[k] - base[k]
        spread = max(model[f"{k}_std"] or 0.0, base[f"{k}_std"] or 0.0)
        if n < 2:
            verdict = "one seed: no spread measured, so this difference is not evidence either way"
        elif abs(d) <= 2 * spread:
            verdict = f"within twice the seed spread ({100 * spread:.1f}): no measurable difference"
        else:
            verdict = "larger than twice the seed spread"
        lines.append(f"- {k}: {model['model']} - {base['model']} = {100 * d:+.1f} points ({verdict}).")
    lines += [
        "",
        f"Machine: {machine.get('platform')}, CPU {machine.get('cpu')} ({machine.get('cpu_count')} cores), "
        f"device {machine.get('device')}{' ' + machine['accelerator'] if machine.get('accelerator') else ''}, "
        f"torch {machine.get('torch')}, ultralytics {machine.get('ultralytics')}.",
        "",
        "![metrics](compare.png)",
        "",
    ]
    return "\n".join(lines)


def dataset_label(data: str) -> str:
    """A short name for the chart title: the synthetic task, else the YAML's stem, else its folder."""
    import yaml

    path = Path(data)
    try:
        spec = yaml.safe_load(path.read_text()) if path.is_file() else None
    except (OSError, yaml.YAMLError):
        spec = None
    synthetic = spec.get("synthetic") if isinstance(spec, dict) else None
    if isinstance(synthetic, dict) and synthetic.get("kind"):
        return f"synthetic {synthetic['kind']} task"
    if path.stem.lower() != "data":
        return path.stem
    return path.parent.name or str(data)


def chart(path: Path, settings: CompareSettings, entries: list[dict]) -> None:
    """compare.png: every metric with a score, one bar per model, the std over seeds as error bars."""
    import matplotlib

    if "MPLBACKEND" not in os.environ:
        matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    metrics = [k for k in METRICS if any(e[k] is not None for e in entries)]
    x = np.arange(len(metrics))
    width = 0.8 / len(entries)
    fig, ax = plt.subplots(figsize=(1.3 * len(metrics) + 2.5, 4.0), dpi=110)
    top = 0.0
    for i, e in enumerate(entries):
        vals = [100 * (e[k] or 0.0) for k in metrics]
        errs = [100 * (e[f"{k}_std"] or 0.0) for k in metrics]
        bars = ax.bar(x + (i - (len(entries) - 1) / 2) * width, vals, width, yerr=errs, capsize=4, label=e["model"])
        ax.bar_label(bars, labels=[f"{v:.1f}" for v in vals], padding=2, fontsize=7)
        top = max([top, *(v + s for v, s in zip(vals, errs))])
    ax.set_ylim(0, max(1.0, 1.15 * top))
    ax.set_xticks(x, metrics)
    ax.set_ylabel("COCO box AP (%)")
    n = len(settings.seeds)
    ax.set_title(
        f"{dataset_label(settings.data)}: mean ± std over {n} seed{'s' if n != 1 else ''}, "
        f"{settings.train_args.get('epochs', '?')} epochs",
        fontsize=10,
    )
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def result_table(result: dict[str, Any]) -> str:
    """A plain-text table of compare.json's models (what the command prints): AP, APs, AP50 in %, cost."""
    n = len(result["settings"]["seeds"])
    rows = [
        [
            e["model"], *(pct(e[k], e[f"{k}_std"] if n > 1 else None) for k in ("AP", "APs", "AP50")),
            f"{e['params'] / 1e6:.2f}M", f"{e['gflops']:.2f}", f"{e['latency_ms']:.1f}",
        ]  # fmt: skip
        for e in result["models"]
    ]
    return format_table(["model", "AP", "APs", "AP50", "params", "GFLOPs", "ms"], rows)
