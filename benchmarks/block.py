"""NonLocal block vs the explicit form the popular copies write: forward+backward time and peak memory.

The explicit reference is the embedded-Gaussian block as most PyTorch copies write it: theta/phi/g 1x1
convolutions, ``f = softmax(theta^T phi)`` as an N x N matrix, ``y = f g``, W_z conv + BN, residual.
Sizes are the maps a Non-local block sees in YOLOv8n/s: P3/P4/P5 of a 640 input and P3 of a 1280 input.

Time: median of ``--reps`` forward+backward passes, both implementations interleaved in one process. On the
CPU the clock is the process's CPU time with one torch thread (``--threads``), which other jobs on a shared
machine barely disturb, unlike wall time; on CUDA it is wall time between synchronisations.
Memory: peak growth during one forward+backward; on CUDA from the allocator's statistics, on the CPU
from the resident set size of a fresh subprocess per measurement, sampled every 0.5 ms during the step
(the allocator returns large blocks to the system, so only growth during the step counts).

    python benchmarks/block.py                      # CPU, batch 1, fp32
    python benchmarks/block.py --device cuda --batch 16 --dtype bf16
    python benchmarks/block.py --kernels            # the attention op alone, every backend (CPU dispatch evidence)
    python benchmarks/block.py --roofline           # what the CPU's GEMM/conv/exp reach on the attention's pieces

``--kernels`` times ``softmax(s q k^T) v`` alone, q (B, N, d), k (B, N', d), v (B, N', c) strided as the block
passes them, on each backend of ``yolo_nonlocal.ops.softmax_attention`` (and the CPU fused path with one head,
to show the backward's threading), forward (no_grad) and forward+backward, with the attention's GFLOPs
(2 N N' (d + c) per image) and the rate reached: the arithmetic the issue-12 target aims at, against the
float32 logits (B N N' x 4 bytes) the explicit form writes and reads. These figures choose the CPU dispatch
(``CPU_EXPLICIT_MAX_LOGITS``, ``MIN_QUERIES_PER_HEAD``, ``DEFAULT_CHUNK_ELEMENTS``; see docs/speed.md).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from yolo_nonlocal import NonLocal  # noqa: E402
from yolo_nonlocal.utils.machine import describe_machine  # noqa: E402

# (label, channels, side): the maps YOLOv8n and YOLOv8s feed a block at P5/P4/P3 of 640 and P3 of 1280
SIZES = [
    ("v8n P5@640", 256, 20),
    ("v8n P4@640", 128, 40),
    ("v8n P3@640", 64, 80),
    ("v8n P3@1280", 64, 160),
    ("v8s P5@640", 512, 20),
    ("v8s P4@640", 256, 40),
    ("v8s P3@640", 128, 80),
    ("v8s P3@1280", 128, 160),
]


class ExplicitNonLocal(nn.Module):
    """The explicit embedded-Gaussian block of the popular copies (N x N matrix, unscaled softmax)."""

    def __init__(self, c1: int):
        super().__init__()
        c = c1 // 2
        self.g, self.theta, self.phi = (nn.Conv2d(c1, c, 1) for _ in range(3))
        self.w_z = nn.Sequential(nn.Conv2d(c, c1, 1), nn.BatchNorm2d(c1))

    def forward(self, x):
        b, _, h, w = x.shape
        g = self.g(x).view(b, -1, h * w).permute(0, 2, 1)
        theta = self.theta(x).view(b, -1, h * w).permute(0, 2, 1)
        phi = self.phi(x).view(b, -1, h * w)
        f = F.softmax(torch.matmul(theta, phi), dim=-1)
        y = torch.matmul(f, g).permute(0, 2, 1).contiguous().view(b, -1, h, w)
        return self.w_z(y) + x


def build(impl: str, c: int, device: str) -> nn.Module:
    m = NonLocal(c) if impl == "nonlocal" else ExplicitNonLocal(c)
    with torch.no_grad():
        m.w_z[1].weight.fill_(1.0)  # a trained block, not the identity
    return m.to(device).train()


def step(m: nn.Module, x: torch.Tensor, dtype: torch.dtype | None) -> None:
    with torch.autocast(x.device.type, dtype=dtype, enabled=dtype is not None):
        out = m(x)
    out.float().square().mean().backward()


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def time_pair(c: int, side: int, args) -> dict[str, float]:
    x = torch.randn(args.batch, c, side, side, device=args.device, requires_grad=True)
    mods = {impl: build(impl, c, args.device) for impl in ("explicit", "nonlocal")}
    times: dict[str, list[float]] = {impl: [] for impl in mods}
    for impl, m in mods.items():  # warm-up
        step(m, x, args.amp_dtype)
    clock = time.perf_counter if args.device == "cuda" else time.process_time
    for _ in range(args.reps):
        for impl, m in mods.items():
            sync(args.device)
            t0 = clock()
            step(m, x, args.amp_dtype)
            sync(args.device)
            times[impl].append(clock() - t0)
    return {impl: statistics.median(v) * 1e3 for impl, v in times.items()}


def peak_memory_mib(impl: str, c: int, side: int, args) -> float:
    if args.device == "cuda":
        x = torch.randn(args.batch, c, side, side, device="cuda", requires_grad=True)
        m = build(impl, c, "cuda")
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        step(m, x, args.amp_dtype)
        torch.cuda.synchronize()
        return (torch.cuda.max_memory_allocated() - base) / 2**20
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps([impl, c, side, args.batch, args.dtype])]
    return json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)["peak_mib"]


def _rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _child(spec: str) -> None:
    """Peak resident-memory growth of one forward+backward, sampled every 0.5 ms by a watcher thread."""
    import threading

    impl, c, side, batch, dtype = json.loads(spec)
    x = torch.randn(batch, c, side, side, requires_grad=True)
    m = build(impl, c, "cpu")
    step(build(impl, c, "cpu"), torch.randn(1, c, 8, 8, requires_grad=True), None)  # load kernels, allocator
    base = _rss_bytes()
    peak, done = [base], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], _rss_bytes())
            time.sleep(0.0005)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    step(m, x, {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[dtype])
    done.set()
    watcher.join()
    peak[0] = max(peak[0], _rss_bytes())
    print(json.dumps({"peak_mib": (peak[0] - base) / 2**20}))


# (label, B, N, N', d, c): the attention shapes of yolov8n-nl's blocks (P3: 64 channels, d = c = 32; P5: 256
# channels, d = c = 128) at 320/640/1280 px, with and without sub_sample, and batch 8 at 640 px
KERNEL_SIZES = [
    ("P5@320", 1, 100, 100, 128, 128),
    ("P5@640", 1, 400, 400, 128, 128),
    ("P5@1280", 1, 1600, 1600, 128, 128),
    ("P3@320", 1, 1600, 1600, 32, 32),
    ("P3@320 sub", 1, 1600, 400, 32, 32),
    ("P3@640", 1, 6400, 6400, 32, 32),
    ("P3@640 sub", 1, 6400, 1600, 32, 32),
    ("P3@640 x8", 8, 6400, 6400, 32, 32),
    ("P3@1280", 1, 25600, 25600, 32, 32),
]


def kernels(args) -> None:
    """The attention op alone on every backend: CPU ms forward / forward+backward and GFLOP/s."""
    from yolo_nonlocal.ops import chunked_attention, softmax_attention as sa

    backends = {
        "explicit": lambda q, k, v, s: sa.softmax_attention(q, k, v, s, "explicit"),
        "chunked": lambda q, k, v, s: sa.softmax_attention(q, k, v, s, "chunked"),
        "sdpa": lambda q, k, v, s: sa.softmax_attention(q, k, v, s, "sdpa"),
        "sdpa 1 head": lambda q, k, v, s: sa.sdpa_attention(q, k, v, s, heads=1),
    }
    if args.threads == 1:
        del backends["sdpa 1 head"]  # the same as sdpa with one thread
    gpu = args.device == "cuda"
    clock = time.perf_counter if gpu else time.process_time
    sizes = [s for s in KERNEL_SIZES if args.only is None or s[0] in args.only.split(",")]
    print(f"# softmax(s q k^T) v alone, fp32, {'wall time' if gpu else f'process CPU time, {args.threads} torch thread(s)'}"
          f", median of {args.reps}; ms forward (no_grad) / forward+backward, GFLOP/s of the forward in brackets")
    print(f"# machine: {describe_machine(args.device, packages=('torch',))}")
    print(f"# auto on the CPU: explicit up to {sa.CPU_EXPLICIT_MAX_LOGITS} logits an image, sdpa above; chunks of "
          f"{chunked_attention.DEFAULT_CHUNK_ELEMENTS} logits")
    print("| shape | B x N x N' x (d+c) | GFLOPs | logits MB | auto | " + " | ".join(backends) + " |")
    print("|---|---|---:|---:|---|" + "---:|" * len(backends))
    for label, b, n, n_keys, d, c in sizes:
        gen = torch.Generator().manual_seed(0)
        tensors = [torch.randn(b, ch, length, generator=gen).to(args.device).transpose(1, 2)
                   for length, ch in ((n, d), (n_keys, d), (n_keys, c))]
        flops = 2 * b * n * n_keys * (d + c)
        cells = []
        for name, fn in backends.items():
            if name == "explicit" and b * n * n_keys * 4 > args.max_logits_gb * 1e9:
                cells.append("-")
                continue
            q, k, v = (t.detach() for t in tensors)
            with torch.no_grad():
                fwd = _median_time(lambda: fn(q, k, v, d ** -0.5), args, clock)
            q, k, v = (t.detach().requires_grad_() for t in tensors)
            both = _median_time(lambda: fn(q, k, v, d ** -0.5).sum().backward(), args, clock)
            cells.append(f"{fwd * 1e3:.1f} / {both * 1e3:.1f} ({flops / fwd / 1e9:.0f})")
        auto = sa.select_backend(tensors[0], tensors[1])
        print(f"| {label} | {b}x{n}x{n_keys}x({d}+{c}) | {flops / 1e9:.2f} | {b * n * n_keys * 4 / 1e6:.0f} | {auto} | "
              + " | ".join(cells) + " |", flush=True)


def roofline(args) -> None:
    """What this CPU's libraries reach on the attention's pieces, beside a big GEMM and a convolution."""
    clock = time.process_time
    n, d, qs, ks = 6400, 32, 256, 512  # P3@640, and the flash kernel's tile (256 queries x 512 keys)
    gen = torch.Generator().manual_seed(0)
    r = lambda *shape: torch.randn(*shape, generator=gen)  # noqa: E731
    a, b = r(1024, 1024), r(1024, 1024)
    q, kt, v, tile = r(qs, d), r(d, ks), r(ks, d), torch.empty(qs, ks)
    p_tile, out = torch.rand(qs, ks, generator=gen), torch.zeros(qs, d)
    logits, exp_out = r(n, n) * 0.1, torch.empty(n, n)
    x, conv = r(1, 64, 80, 80), nn.Conv2d(64, 64, 3, padding=1)
    tiles = n * n // (qs * ks)
    rows = [
        ("sgemm 1024 x 1024 x 1024 (MKL)", 2 * 1024**3, lambda: torch.mm(a, b)),
        (f"q k^T tiles {qs}x{d} . {d}x{ks}, x{tiles}", 2 * n * n * d,
         lambda: [torch.mm(q, kt, out=tile) for _ in range(tiles)]),
        (f"P v tiles {qs}x{ks} . {ks}x{d}, x{tiles}", 2 * n * n * d,
         lambda: [torch.addmm(out, p_tile, v, out=out) for _ in range(tiles)]),
        (f"exp of {n}x{n} floats", None, lambda: torch.exp(logits, out=exp_out)),
        (f"softmax of {n}x{n} floats (explicit form's pass)", None, lambda: logits.softmax(-1)),
        ("conv 3x3, 64 -> 64 channels, 80x80 (oneDNN)", 2 * 64 * 64 * 9 * 6400, lambda: conv(x)),
    ]
    print(f"# roofline pieces, fp32, process CPU time, {args.threads} torch thread(s), median of {args.reps}")
    print(f"# machine: {describe_machine('cpu', packages=('torch',))}")
    print("| piece | ms | GFLOP/s |")
    print("|---|---:|---:|")
    with torch.no_grad():
        for label, flops, fn in rows:
            t = _median_time(fn, args, clock)
            print(f"| {label} | {t * 1e3:.1f} | {flops / t / 1e9:.0f} |" if flops else f"| {label} | {t * 1e3:.1f} | - |",
                  flush=True)


def _median_time(fn, args, clock) -> float:
    fn()
    times = []
    for _ in range(args.reps):
        sync(args.device)
        t0 = clock()
        fn()
        sync(args.device)
        times.append(clock() - t0)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", choices=["cpu", "cuda"])
    p.add_argument("--batch", type=int, default=None, help="default: 16 on cuda, 1 on cpu")
    p.add_argument("--dtype", default=None, choices=["fp32", "bf16", "fp16"], help="autocast dtype (default: bf16 on cuda, fp32 on cpu)")
    p.add_argument("--reps", type=int, default=None, help="timed repetitions (default: 20 on cuda, 3 on cpu)")
    p.add_argument("--only", default=None, help="comma-separated labels to run, e.g. 'v8n P3@640'")
    p.add_argument("--no-memory", action="store_true", help="skip the memory column")
    p.add_argument("--threads", type=int, default=1, help="torch threads on the CPU (CPU time is measured)")
    p.add_argument("--kernels", action="store_true", help="time the attention op alone on every backend")
    p.add_argument("--roofline", action="store_true", help="CPU: what MKL/oneDNN reach on the attention's pieces")
    p.add_argument("--max-logits-gb", type=float, default=1.0, help="--kernels: skip the explicit backend above this")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args._child:
        return _child(args._child)
    gpu = args.device == "cuda"
    if not gpu:
        torch.set_num_threads(args.threads)
    args.batch = args.batch or (16 if gpu else 1)
    args.dtype = args.dtype or ("bf16" if gpu else "fp32")
    args.reps = args.reps or (20 if gpu else 3)
    args.amp_dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    if args.kernels:
        return kernels(args)
    if args.roofline:
        return roofline(args)
    sizes = [s for s in SIZES if args.only is None or s[0] in args.only.split(",")]

    clock = "wall time" if gpu else f"process CPU time, {args.threads} torch thread(s)"
    print(f"# NonLocal (default backend) vs explicit N x N block, forward+backward, batch {args.batch}, {args.dtype}, {clock}")
    print(f"# machine: {describe_machine(args.device, packages=('torch',))}")
    print("| map | C x H x W | explicit ms | NonLocal ms | time NonLocal/explicit | explicit MiB | NonLocal MiB | memory explicit/NonLocal |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    for label, c, side in sizes:
        t = time_pair(c, side, args)
        if args.no_memory:
            mem = {"explicit": float("nan"), "nonlocal": float("nan")}
        else:
            mem = {impl: peak_memory_mib(impl, c, side, args) for impl in ("explicit", "nonlocal")}
        print(
            f"| {label} | {c}x{side}x{side} | {t['explicit']:.1f} | {t['nonlocal']:.1f} | "
            f"{t['nonlocal'] / t['explicit']:.2f}x | {mem['explicit']:.0f} | {mem['nonlocal']:.0f} | "
            f"{mem['explicit'] / max(mem['nonlocal'], 1e-9):.1f}x |",
            flush=True,
        )


if __name__ == "__main__":
    main()
