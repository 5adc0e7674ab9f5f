"""What a model costs: parameters, GFLOPs with the attention products counted once, and batch-1 latency.

``compare`` reports these beside AP for both models; a Non-local block's pairwise products, which conv-only
FLOP counters miss, are counted by :mod:`yolo_nonlocal.integrations.ultralytics.flops`.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from yolo_nonlocal.utils.device import torch_device

__all__ = ["machine_info", "model_cost", "measure_latency"]


def machine_info(device: Any = None) -> dict[str, Any]:
    """Where numbers come from: platform, CPU, accelerator, torch and Ultralytics versions."""
    from yolo_nonlocal.utils.machine import machine_info as _machine_info

    return _machine_info(torch_device(device))


def model_cost(model, imgsz: int) -> dict[str, Any]:
    """Parameters and GFLOPs at ``imgsz`` (one image), attention products included, counted once.

    ``gflops`` is what Ultralytics' summaries report with this package installed (its thop count of the
    layers plus every block's attention products at their real size, see ``ultralytics_flops``);
    ``attention_gflops`` is the blocks' share of it and ``gflops_conv`` the rest.
    """
    import copy

    from ultralytics.utils import torch_utils

    from yolo_nonlocal.nonlocal_block import NonLocal
    from yolo_nonlocal.integrations.ultralytics.flops import attention_gflops, install

    install()  # idempotent; register() has normally done it already
    model = copy.deepcopy(model).float().cpu().eval()
    total = float(torch_utils.get_flops(model, imgsz))
    attn = attention_gflops(model, imgsz)
    return {
        "params": int(sum(p.numel() for p in model.parameters())),
        "gflops": total,
        "gflops_conv": max(total - attn, 0.0),
        "attention_gflops": attn,
        "nonlocal_blocks": sum(isinstance(m, NonLocal) for m in model.modules()),
    }


def measure_latency(
    models: dict[str, Any], imgsz: int, device: Any = None, runs: int = 30, warmup: int = 5
) -> dict[str, dict[str, float]]:
    """Batch-1 forward latency in ms of each fused model: median and interquartile range over ``runs``.

    The models are timed in turns (A, B, A, B, ...) in one process, so a change in machine load during
    the measurement hits all of them alike; compare numbers from one call only.
    """
    import copy

    import torch

    dev = torch_device(device)
    nets = {}
    for name, model in models.items():
        m = copy.deepcopy(model).float().eval()
        if hasattr(m, "fuse"):
            try:
                m = m.fuse(verbose=False)
            except TypeError:
                m = m.fuse()
        nets[name] = m.to(dev)
    x = torch.zeros(1, 3, imgsz, imgsz, device=dev)
    times: dict[str, list[float]] = {name: [] for name in nets}
    with torch.inference_mode():
        for i in range(warmup + runs):
            for name, m in nets.items():
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                t0 = time.perf_counter()
                m(x)
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                if i >= warmup:
                    times[name].append((time.perf_counter() - t0) * 1e3)
    out = {}
    for name, ts in times.items():
        q = statistics.quantiles(ts, n=4) if len(ts) >= 2 else [ts[0]] * 3
        out[name] = {"latency_ms": statistics.median(ts), "latency_ms_iqr": q[2] - q[0]}
    return out
