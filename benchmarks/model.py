"""Cost of the Non-local models beside the attention YOLOs a user would pick instead (issue 12's table).

CPU (default): for each image size x batch x thread count, every model below is built from its YAML (random
weights, 80 classes) and timed, all models interleaved round-robin in one process so that drifting load hits
them alike; times are medians of the process's CPU time (``time.process_time``, all threads summed), which
other jobs on a shared machine disturb far less than wall time:

- GFLOPs: Ultralytics' ``get_flops`` of the fused model as yolo-nonlocal patches it (the attention products
  counted at the real size, ``integrations.ultralytics.flops.attention_gflops``); ``x base`` is the ratio to
  yolov8n, the arithmetic lower bound of the time ratio.
- torch: eager inference of the fused model (Conv+BN folded, eval, no_grad), as ``yolo predict`` runs it;
  ``/ FLOPs`` is the time ratio over the FLOP ratio (issue 12's target: at most 1.1).
- onnxruntime: the same fused model exported with ``torch.onnx.export`` (opset 17, TorchScript exporter,
  static shapes; the block exports as ``scaled_dot_product_attention``, i.e. MatMul-Softmax-MatMul),
  CPUExecutionProvider with ``intra_op_num_threads`` = the thread count.
- train: forward + Ultralytics' detection loss + backward (random images, random small boxes), no optimiser
  step (``--train`` on; off with ``--no-train``).
- memory (``--memory-imgsz``, default 1280, batch 1, one thread): peak resident set of a fresh process that
  loads the model and runs one inference: torch (the model built from its YAML, fused) and onnxruntime (the
  exported file; the process imports onnxruntime and numpy only).

Models: yolov8n; yolov8n-nl (shipped: ``sub_sample`` on its P3 row); yolov8n-nl-full (the P3 row at full
resolution); yolov8n-nl-p2; yolo11n (C2PSA attention at P5); yolo12n (area attention, A2C2f).

    python benchmarks/model.py                                   # quick: 640 px, batch 1, 1 thread (+ memory)
    python benchmarks/model.py --full                            # 320/640/1280 x batch 1/8 x 1/all threads
    python benchmarks/model.py --imgsz 320,640 --batch 1 --threads 1,all --iters 7

GPU (``--device cuda``, as benchmarks/gpu_evidence.sh runs it): the training step (forward, loss, backward,
SGD step, AMP) and inference of yolov8n against yolov8n-nl (fused attention) and yolov8n-nl (explicit
attention) at 640 x 32 and 1280 x 8, wall time between synchronisations, peak memory from the allocator.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from yolo_nonlocal.utils.machine import describe_machine  # noqa: E402

BASE = "yolov8n"
# (row name, YAML, note): the table's rows, in order
MODELS = (
    ("yolov8n", "yolov8n.yaml", ""),
    ("yolov8n-nl", "yolov8n-nl.yaml", "shipped: P3 row sub-sampled"),
    ("yolov8n-nl-full", "yolov8n-nl-full.yaml", "P3 row at full resolution"),
    ("yolov8n-nl-p2", "yolov8n-nl-p2.yaml", ""),
    ("yolo11n", "yolo11n.yaml", "C2PSA attention"),
    ("yolo12n", "yolo12n.yaml", "area attention"),
)

GPU_VARIANTS = (
    ("yolov8n", "yolov8n.yaml", None),
    ("yolov8n-nl (fused)", "yolov8n-nl.yaml", "auto"),
    ("yolov8n-nl (explicit)", "yolov8n-nl.yaml", "explicit"),
)


# ---------------------------------------------------------------------------------------- models
def build(name_or_yaml, device: torch.device, backend: str | None = None):
    """An 80-class DetectionModel from a row name (or a YAML for the GPU variants), random weights, seed 0."""
    import yolo_nonlocal

    yolo_nonlocal.register()
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from yolo_nonlocal.nonlocal_block import NonLocal

    cfg = dict((m[0], m[1]) for m in MODELS).get(name_or_yaml, name_or_yaml)
    torch.manual_seed(0)
    model = DetectionModel(cfg, nc=80, verbose=False)
    for m in model.modules():
        if isinstance(m, NonLocal) and backend is not None:
            m.backend = backend
    model.args = get_cfg()  # loss hyper-parameters (box, cls, dfl gains)
    return model.to(device)


def fused(model):
    """The inference model: a fused (Conv+BN folded) eval copy, as ``yolo predict`` runs it."""
    return copy.deepcopy(model).fuse(verbose=False).eval()


def gflops(model, imgsz: int) -> float:
    """Ultralytics' GFLOPs of the fused model at imgsz; yolo-nonlocal's patch adds the attention at the real size."""
    import yolo_nonlocal

    yolo_nonlocal.register()
    from ultralytics.utils import torch_utils

    return float(torch_utils.get_flops(model, imgsz))


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


def export_onnx(model, imgsz: int, batch: int, path: Path) -> Path:
    """The fused model as ONNX (opset 17, static shapes), the detection head in export mode (one output)."""
    m = fused(model)
    for mod in m.modules():
        if hasattr(mod, "export") and hasattr(mod, "stride") and type(mod).__name__.startswith("Detect"):
            mod.export, mod.format = True, "onnx"
    x = torch.zeros(batch, 3, imgsz, imgsz)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation and tracer warnings
        torch.onnx.export(m, (x,), str(path), opset_version=17, dynamo=False, input_names=["images"],
                          output_names=["output0"])
    return path


def ort_session(path: Path, threads: int):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(str(path), sess_options=so, providers=["CPUExecutionProvider"])


# ---------------------------------------------------------------------------------------- timing
def interleaved(fns: list, warmup: int, iters: int, clock=time.process_time, sync=None) -> list[float]:
    """Median time of each fn, measured round-robin so that drifting machine load hits all alike."""
    for fn in fns:
        for _ in range(warmup):
            fn()
    times = [[] for _ in fns]
    for _ in range(iters):
        for k, fn in enumerate(fns):
            if sync:
                sync()
            t = clock()
            fn()
            if sync:
                sync()
            times[k].append(clock() - t)
    return [statistics.median(t) for t in times]


def _peak_rss_child(spec: str) -> None:
    """Child process: peak resident set (MiB) after one inference of a torch model or an ONNX file.

    VmHWM of /proc/self/status: the high-water mark of this process's own memory map (getrusage's
    ru_maxrss would carry the parent's peak across fork and exec on Linux).
    """
    kind, what, imgsz = json.loads(spec)
    if kind == "onnx":
        import numpy as np

        session = ort_session(Path(what), 1)
        x = np.zeros((1, 3, imgsz, imgsz), dtype=np.float32)
        session.run(None, {"images": x})
    else:
        torch.set_num_threads(1)
        m = fused(build(what, torch.device("cpu")))
        with torch.no_grad():
            m(torch.zeros(1, 3, imgsz, imgsz))
    hwm = next(line for line in Path("/proc/self/status").read_text().splitlines() if line.startswith("VmHWM:"))
    print(json.dumps({"peak_mib": int(hwm.split()[1]) / 1024}))


def peak_rss_mib(kind: str, what: str, imgsz: int) -> float:
    cmd = [sys.executable, os.path.abspath(__file__), "--_child", json.dumps([kind, what, imgsz])]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        return float("nan")
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mib"]


# ---------------------------------------------------------------------------------------- CPU table
# process CPU time is robust to other jobs on a shared machine, but with several threads it also counts
# OpenMP threads spinning while they wait for each other; wall time is the user's clock on a quiet machine
CLOCKS = {"cpu": time.process_time, "wall": time.perf_counter}


def _file_name(row: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in row)


def _threads(spec: str) -> list[int]:
    out = []
    for part in spec.split(","):
        part = part.strip()
        n = (os.cpu_count() or 1) if part == "all" else int(part)
        if n < 1:
            raise SystemExit(f"model.py: --threads takes positive counts or 'all', got {part!r}")
        if n not in out:
            out.append(n)
    return out


def _ints(spec: str, what: str) -> list[int]:
    try:
        values = [int(s) for s in spec.split(",")]
    except ValueError:
        raise SystemExit(f"model.py: {what} takes comma-separated integers, got {spec!r}") from None
    if any(v < 1 for v in values):
        raise SystemExit(f"model.py: {what} takes positive integers, got {spec!r}")
    return values


def cpu_table(args) -> int:
    names = [m[0] for m in MODELS if args.models is None or m[0] in args.models.split(",")]
    unknown = set((args.models or "").split(",")) - {m[0] for m in MODELS} - {""}
    if unknown:
        raise SystemExit(f"model.py: unknown models {sorted(unknown)}; choose from {', '.join(m[0] for m in MODELS)}")
    if BASE not in names:
        names.insert(0, BASE)
    try:
        import onnxruntime  # noqa: F401

        have_ort = not args.no_onnx
    except ImportError:
        have_ort = False
    device = torch.device("cpu")
    models = {n: build(n, device) for n in names}
    infer_models = {n: fused(m) for n, m in models.items()}
    tmp = Path(tempfile.mkdtemp(prefix="yolo-nonlocal-bench-"))

    print(f"machine: {describe_machine(device, packages=('torch', 'ultralytics', 'onnxruntime'))}")
    clock = "process CPU time (all threads summed)" if args.clock == "cpu" else "wall time"
    print(f"fp32, {clock}, median of {args.iters} interleaved rounds after "
          f"{args.warmup} warm-up; ratios against {BASE} in the same run; attention backend 'auto'\n")
    print("| imgsz x batch, threads | model | GFLOPs | x base | torch ms | x base | / FLOPs | onnxruntime ms | x base "
          "| train ms | x base |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for imgsz in args.imgsz:
        flops = {n: gflops(infer_models[n], imgsz) for n in names}
        for batch in args.batch:
            data = random_batch(batch, imgsz, device)
            sessions = {}
            if have_ort:
                for n in names:
                    path = tmp / f"{_file_name(n)}-{imgsz}-{batch}.onnx"
                    if not path.exists():
                        export_onnx(models[n], imgsz, batch, path)
                    sessions[n] = path
            for threads in args.threads:
                torch.set_num_threads(threads)
                fns, keys = [], []
                for n in names:
                    def infer(m=infer_models[n]):
                        with torch.no_grad():
                            m(data["img"])
                    fns.append(infer)
                    keys.append(("torch", n))
                if have_ort:
                    x = data["img"].numpy()
                    for n in names:
                        s = ort_session(sessions[n], threads)
                        fns.append(lambda s=s: s.run(None, {"images": x}))
                        keys.append(("onnx", n))
                if args.train:
                    for n in names:
                        def train_step(m=models[n]):
                            m.train()
                            m.zero_grad(set_to_none=True)
                            loss, _ = m.loss(data)
                            loss.sum().backward()
                        fns.append(train_step)
                        keys.append(("train", n))
                t = dict(zip(keys, interleaved(fns, args.warmup, args.iters, CLOCKS[args.clock])))
                for n in names:
                    fr = flops[n] / flops[BASE]
                    tr = t[("torch", n)] / t[("torch", BASE)]
                    onnx = (f"{t[('onnx', n)] * 1e3:.0f} | {t[('onnx', n)] / t[('onnx', BASE)]:.2f}" if have_ort
                            else "- | -")
                    train = (f"{t[('train', n)] * 1e3:.0f} | {t[('train', n)] / t[('train', BASE)]:.2f}" if args.train
                             else "- | -")
                    print(f"| {imgsz} x {batch}, {threads} | {n} | {flops[n]:.1f} | {fr:.2f} | "
                          f"{t[('torch', n)] * 1e3:.0f} | {tr:.2f} | {tr / fr:.2f} | {onnx} | {train} |", flush=True)
    if args.memory_imgsz and have_ort:
        imgsz = args.memory_imgsz
        print(f"\nPeak resident memory of a fresh process running one inference at {imgsz} px, batch 1, 1 thread (MiB):\n")
        print("| model | torch (.pt, fused) | onnxruntime |")
        print("|---|---:|---:|")
        for n in names:
            path = tmp / f"{_file_name(n)}-{imgsz}-1.onnx"
            if not path.exists():
                export_onnx(models[n], imgsz, 1, path)
            print(f"| {n} | {peak_rss_mib('torch', n, imgsz):.0f} | {peak_rss_mib('onnx', str(path), imgsz):.0f} |",
                  flush=True)
    return 0


# ---------------------------------------------------------------------------------------- GPU harness
def cuda_peak(fn, device: torch.device) -> int:
    """Peak memory allocated while fn runs, above what was resident before it (bytes)."""
    torch.cuda.synchronize(device)
    torch.cuda.reset_peak_memory_stats(device)
    before = torch.cuda.memory_allocated(device)
    fn()
    torch.cuda.synchronize(device)
    return torch.cuda.max_memory_allocated(device) - before


def gpu_table(args) -> int:
    device = torch.device(args.device)
    amp = not args.no_amp
    configs = [(args.imgsz[0], args.batch[0])] if args.imgsz_given else [(640, 32), (1280, 8)]
    chosen = [v for v in GPU_VARIANTS if args.variants is None or v[0] in args.variants.split(",")]
    print(f"machine: {describe_machine(device)}")
    print(f"device: {device}, AMP {'on (fp16)' if amp else 'off (fp32)'}, wall time, median of {args.iters} rounds "
          f"after {args.warmup} warm-up\n")
    print("| imgsz x batch | model | train step (ms) | x base | train peak mem (MiB) | x base "
          "| inference (ms) | x base | inference peak mem (MiB) | x base |")
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    sync = lambda: torch.cuda.synchronize(device)  # noqa: E731
    for imgsz, batch in configs:
        try:
            fns = []
            for _, yaml, backend in chosen:
                model = build(yaml, device, backend)
                data = random_batch(batch, imgsz, device)
                opt = torch.optim.SGD(model.parameters(), lr=1e-4, momentum=0.9)
                scaler = torch.amp.GradScaler("cuda", enabled=amp)
                infer_model = fused(model)

                def train_step(model=model, data=data, opt=opt, scaler=scaler):
                    model.train()
                    opt.zero_grad(set_to_none=True)
                    with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        loss, _ = model.loss(data)
                    scaler.scale(loss.sum()).backward()
                    scaler.step(opt)
                    scaler.update()

                def infer(m=infer_model, data=data):
                    with torch.no_grad(), torch.autocast(device.type, dtype=torch.float16, enabled=amp):
                        m(data["img"])

                fns.append((train_step, infer))
            train_t = interleaved([f[0] for f in fns], args.warmup, args.iters, time.perf_counter, sync)
            train_m = [cuda_peak(f[0], device) for f in fns]
            infer_t = interleaved([f[1] for f in fns], args.warmup, args.iters, time.perf_counter, sync)
            infer_m = [cuda_peak(f[1], device) for f in fns]
        except torch.OutOfMemoryError as e:
            print(f"| {imgsz} x {batch} | out of memory: {e} |")
            continue
        for k, (name, _, _) in enumerate(chosen):
            print(f"| {imgsz} x {batch} | {name} | {train_t[k] * 1e3:.1f} | {train_t[k] / train_t[0]:.2f} | "
                  f"{train_m[k] / 2**20:.0f} | {train_m[k] / max(train_m[0], 1):.2f} | {infer_t[k] * 1e3:.1f} | "
                  f"{infer_t[k] / infer_t[0]:.2f} | {infer_m[k] / 2**20:.0f} | {infer_m[k] / max(infer_m[0], 1):.2f} |",
                  flush=True)
        del fns
        torch.cuda.empty_cache()
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cpu", help="cpu (the issue's table, default) or cuda (the GPU harness)")
    p.add_argument("--imgsz", default=None, help="comma-separated image sizes (CPU default 640; --full: 320,640,1280)")
    p.add_argument("--batch", default=None, help="comma-separated batch sizes (CPU default 1; --full: 1,8)")
    p.add_argument("--threads", default=None, help="comma-separated torch/onnxruntime thread counts or 'all' "
                   "(CPU default 1; --full: 1,all)")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="cpu", help="CPU: process CPU time (default; robust "
                   "on a shared machine, but counts spinning threads) or wall time (for all-threads rows on a quiet machine)")
    p.add_argument("--full", action="store_true", help="the whole grid: 320/640/1280 px x batch 1/8 x 1/all threads")
    p.add_argument("--models", default=None, help="comma-separated row names (default: all; yolov8n is always in)")
    p.add_argument("--iters", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--no-train", dest="train", action="store_false", help="skip the forward+backward column")
    p.add_argument("--no-onnx", action="store_true", help="skip the onnxruntime column and the memory table")
    p.add_argument("--memory-imgsz", type=int, default=1280, help="image size of the peak-memory table (0: skip)")
    p.add_argument("--no-amp", action="store_true", help="GPU: fp32 (AMP is on by default there)")
    p.add_argument("--variants", default=None, help="GPU: comma-separated subset of the GPU variants")
    p.add_argument("--_child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args._child:
        _peak_rss_child(args._child)
        return 0
    if args.iters < 1 or args.warmup < 0:
        raise SystemExit("model.py: --iters must be at least 1 and --warmup at least 0")
    args.imgsz_given = args.imgsz is not None
    args.imgsz = _ints(args.imgsz or ("320,640,1280" if args.full else "640"), "--imgsz")
    args.batch = _ints(args.batch or ("1,8" if args.full else "1"), "--batch")
    args.threads = _threads(args.threads or ("1,all" if args.full else "1"))
    if args.device.startswith("cuda"):
        return gpu_table(args)
    return cpu_table(args)


if __name__ == "__main__":
    raise SystemExit(main())
