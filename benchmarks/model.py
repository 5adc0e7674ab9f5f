"""Cost of the Non-local blocks inside a detector: yolov8n vs yolov8n-nl (fused attention) vs yolov8n-nl with
the explicit attention product, for a training step and for inference, side by side in one process.

A training step is forward + Ultralytics' detection loss + backward + SGD step on a random batch with random
boxes (under AMP on CUDA, as `yolo train` runs); inference is a forward pass of the fused model (Conv+BN
folded, as `yolo predict` runs it; fp16 autocast on CUDA). The variants are timed round-robin (one step of
each in turn, --iters rounds after --warmup) so drifting machine load hits all alike; times are medians.
Peak memory is torch.cuda.max_memory_allocated during one step above what was resident before it (CUDA
only). Ratios are against the baseline measured in the same run. Prints a Markdown table with the machine.

GPU (the issue's settings):   python benchmarks/model.py                      # 640 x 32 and 1280 x 8
CPU (small settings):         python benchmarks/model.py --device cpu --imgsz 320 --batch 2 --iters 5
On the CPU, times are the process's CPU time by default (--clock), which other jobs on the machine disturb
far less than wall time.
"""

from __future__ import annotations

import argparse
import statistics
import time
from copy import deepcopy

import torch

from yolo_nonlocal.utils.machine import describe_machine

VARIANTS = (
    ("yolov8n", "yolov8n.yaml", None),
    ("yolov8n-nl (fused)", "yolov8n-nl.yaml", "auto"),
    ("yolov8n-nl (explicit)", "yolov8n-nl.yaml", "explicit"),
)


def build(yaml: str, backend: str | None, device: torch.device):
    import yolo_nonlocal

    yolo_nonlocal.register()
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from yolo_nonlocal.nonlocal_block import NonLocal

    torch.manual_seed(0)
    model = DetectionModel(yaml, nc=80, verbose=False)
    for m in model.modules():
        if isinstance(m, NonLocal) and backend is not None:
            m.backend = backend
    model.args = get_cfg()  # loss hyper-parameters (box, cls, dfl gains)
    return model.to(device)


def random_batch(batch: int, imgsz: int, device: torch.device, boxes_per_image: int = 8) -> dict:
    g = torch.Generator().manual_seed(0)
    n = batch * boxes_per_image
    wh = torch.rand(n, 2, generator=g) * 0.2 + 0.01  # mostly small objects
    xy = torch.rand(n, 2, generator=g) * (1 - wh) + wh / 2
    return {
        "img": torch.rand(batch, 3, imgsz, imgsz, generator=g).to(device),
        "batch_idx": torch.arange(batch).repeat_interleave(boxes_per_image).float().to(device),
        "cls": torch.randint(0, 80, (n, 1), generator=g).float().to(device),
        "bboxes": torch.cat([xy, wh], 1).to(device),
    }


def cuda_peak(fn, device: torch.device) -> int | None:
    """Peak memory allocated while fn runs, above what was resident before it (bytes; None on the CPU)."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def prepare(yaml, backend, imgsz, batch, device, amp):
    """The (train step, inference) closures of one variant, sharing one random batch."""
    model = build(yaml, backend, device)
    data = random_batch(batch, imgsz, device)
    opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
    scaler = torch.amp.GradScaler("cuda", enabled=amp) if device.type == "cuda" else None
    infer_model = deepcopy(model).fuse(verbose=False).eval()
    dtype = torch.float16

    def train_step():
        model.train()
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype, enabled=amp):
            loss, _ = model.loss(data)
        if scaler is not None:
            scaler.scale(loss.sum()).backward()
            scaler.step(opt)
            scaler.update()
        else:
            loss.sum().backward()
            opt.step()

    def infer():
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype, enabled=amp):
            infer_model(data["img"])

    return train_step, infer


def interleaved(fns: list, device: torch.device, warmup: int, iters: int, clock=time.perf_counter) -> list[float]:
    """Median time of each fn, measured round-robin so that drifting machine load hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(iters):
        for k, fn in enumerate(fns):
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            t = clock()
            fn()
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            times[k].append(clock() - t)
    return [statistics.median(t) for t in times]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--imgsz", type=int, help="one image size (with --batch) instead of 640x32 and 1280x8")
    p.add_argument("--batch", type=int, help="batch size for --imgsz")
    p.add_argument("--iters", type=int, default=10)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--no-amp", action="store_true", help="fp32 on CUDA (AMP is on by default there, off on CPU)")
    p.add_argument("--variants", default=",".join(v[0] for v in VARIANTS), help="comma-separated subset")
    p.add_argument("--clock", choices=("wall", "cpu"), help="wall time (default on CUDA) or the process's CPU time, "
                   "summed over its threads (default on the CPU: robust to other jobs sharing the machine)")
    p.add_argument("--threads", type=int, help="torch CPU threads (default on the CPU: 1, so that CPU time is compute, "
                   "not OpenMP threads spinning while they wait for each other)")
    args = p.parse_args(argv)

    device = torch.device(args.device)
    clock_name = args.clock or ("wall" if device.type == "cuda" else "cpu")
    clock = time.perf_counter if clock_name == "wall" else time.process_time
    if args.threads or device.type == "cpu":
        torch.set_num_threads(args.threads or 1)
    amp = device.type == "cuda" and not args.no_amp
    configs = [(args.imgsz, args.batch or 1)] if args.imgsz else [(640, 32), (1280, 8)]
    chosen = [v for v in VARIANTS if v[0] in args.variants.split(",")]

    print(f"machine: {describe_machine(device)}")
    print(f"device: {device}, AMP {'on (fp16)' if amp else 'off (fp32)'}, {clock_name} time, median of {args.iters} "
          f"rounds after {args.warmup} warm-up\n")
    unit = "ms" if clock_name == "wall" else "CPU ms"
    print(f"| imgsz x batch | model | train step ({unit}) | x base | train peak mem (MiB) | x base "
          f"| inference ({unit}) | x base | inference peak mem (MiB) | x base |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    mib = lambda b: f"{b / 2**20:.0f}" if b is not None else "n/a"  # noqa: E731
    ratio = lambda a, b: f"{a / b:.2f}" if a is not None and b else "n/a"  # noqa: E731
    for imgsz, batch in configs:
        try:
            fns = [prepare(yaml, backend, imgsz, batch, device, amp) for _, yaml, backend in chosen]
            train_t = interleaved([f[0] for f in fns], device, args.warmup, args.iters, clock)
            train_m = [cuda_peak(f[0], device) for f in fns]
            infer_t = interleaved([f[1] for f in fns], device, args.warmup, args.iters, clock)
            infer_m = [cuda_peak(f[1], device) for f in fns]
        except torch.OutOfMemoryError as e:
            print(f"| {imgsz} x {batch} | out of memory: {e} |")
            continue
        for k, (name, _, _) in enumerate(chosen):
            print(f"| {imgsz} x {batch} | {name} | {train_t[k] * 1e3:.1f} | {ratio(train_t[k], train_t[0])} | "
                  f"{mib(train_m[k])} | {ratio(train_m[k], train_m[0])} | {infer_t[k] * 1e3:.1f} | "
                  f"{ratio(infer_t[k], infer_t[0])} | {mib(infer_m[k])} | {ratio(infer_m[k], infer_m[0])} |", flush=True)
        del fns
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
