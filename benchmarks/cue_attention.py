"""Does cue information reach the targets through the Non-local blocks of trained farcue models? Per block.

The positive control of benchmarks/small_objects.py (kind=farcue, rule=far) labels every target by the
colour of a cue that no yolov8n output cell can see; a Non-local model can beat the rule-blind cap only if
its blocks carry the cue's colour to the targets' cells. This script looks inside, on the farcue test split
the harness wrote (``OUT/data/farcue-test-<n>-s1000``, image ``i`` = ``generate_sample(cfg, "val", i)``, so
every cue and target box is known) and its counterfactual twin (``farcue-test-cf-...``: the same images with
only the cue repainted). For every NonLocal block, at the cell of each target's centre (the block's stride):

- **cue effect, in / out**: ||x_cf - x|| / ||x|| of the block's input and of its output over the channels,
  where x_cf is the block's input (output) on the counterfactual image: how much of what that cell holds
  changes with the cue colour alone. An input effect of 0 means nothing upstream carried the cue to that
  cell (the conv layers cannot: it is out of their reach); the output's effect minus the input's is what the
  block added;
- **attention on the cue**: the summed pairwise weight f(x_i, x_j) / C(x) (``NonLocal.pairwise_weights``)
  of the target's query on the key cells that overlap the cue, and that sum over what a uniform map puts
  there (cue keys / N'). Not required for using the cue: at P5 many cells near the cue already hold its
  colour (their receptive field covers it), so a block can fetch it from any of them.

A block can only carry what its input holds. ``--probe`` asks that of any checkpoint (a baseline too): is
the cue's colour linearly decodable from the feature vector at the cue's cell of the given layers (default:
9, SPPF's P5 output where yolov8n-nl's first block reads, and 16, the P3 neck output)? A ridge classifier
on the standardised features, 5-fold cross-validated accuracy over the test images: 0.5 is chance, 1.0 means
the colour is there for a block to fetch.

    python benchmarks/cue_attention.py benchmarks/runs/so-quick/runs/farcue/nl-g1-s*
    python benchmarks/cue_attention.py RUN_DIR ... --images 40
    python benchmarks/cue_attention.py benchmarks/runs/so-quick/runs/farcue/pretrain-baseline-s* --probe 9,16

Means over the targets of the first ``--images`` test images. Output: a Markdown table on stdout (one row
per model and block).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")


def _weights(spec: str) -> Path:
    p = Path(spec)
    if p.is_dir():
        p = p / "weights" / "best.pt"
    if not p.is_file():
        raise SystemExit(f"cue_attention.py: no checkpoint at {p} (give a run folder or a .pt file)")
    return p


def _test_folder(weights: Path, given: str | None) -> Path:
    if given:
        return Path(given)
    # OUT/runs/farcue/<run>/weights/best.pt -> OUT/data/farcue-test-*-s1000 (not the counterfactual one)
    out = weights.resolve().parents[4] if len(weights.resolve().parents) > 4 else weights.parent
    found = sorted(p for p in (out / "data").glob("farcue-test-*") if "-cf-" not in p.name)
    if not found:
        raise SystemExit(f"cue_attention.py: no farcue test split under {out / 'data'}; pass --data FOLDER")
    return found[0]


def _config(folder: Path):
    import yaml

    from yolo_nonlocal.data.synthetic import SyntheticConfig

    spec = yaml.safe_load((folder / "data.yaml").read_text())["synthetic"]
    if spec.get("kind") != "farcue":
        raise SystemExit(f"cue_attention.py: {folder} is a {spec.get('kind')} dataset, not farcue")
    return SyntheticConfig(**spec)


def _cells_overlapping(box: tuple[int, int, int, int], stride_x: float, stride_y: float, wk: int, hk: int) -> list[int]:
    x0, y0, x1, y1 = box
    xs = range(max(0, int(x0 // stride_x)), min(wk, int(math.ceil(x1 / stride_x))))
    ys = range(max(0, int(y0 // stride_y)), min(hk, int(math.ceil(y1 / stride_y))))
    return [yy * wk + xx for yy in ys for xx in xs]


def _cell(box: tuple[int, int, int, int], h: int, w: int, height: int, width: int) -> tuple[int, int]:
    """(row, column) of the cell of an h x w map over a height x width input that holds the box's centre."""
    x0, y0, x1, y1 = box
    return min(h - 1, int((y0 + y1) / 2 * h / height)), min(w - 1, int((x0 + x1) / 2 * w / width))


def measure(weights: Path, folder: Path, cf_folder: Path, n_images: int) -> list[dict]:
    """One row per NonLocal block of ``weights``: cue effects at the target cells and attention on the cue."""
    import torch

    from yolo_nonlocal.data.synthetic import generate_sample
    from yolo_nonlocal.tools.inference import load_model, network_input, nonlocal_layers, read_image

    cfg = _config(folder)
    net = load_model(str(weights), "cue_attention.py")
    layers = nonlocal_layers(net)
    if not layers:
        return []
    seen: dict[int, tuple] = {}

    def record(i):
        return lambda mod, inp, out: seen.__setitem__(i, (inp[0].detach(), out.detach()))

    hooks = [m.register_forward_hook(record(i)) for i, m in layers.items()]
    stats = {i: {"in": [], "out": [], "share": [], "ratio": [], "grid": None} for i in layers}
    images = sorted((folder / "images" / "val").glob("*.png"))[:n_images]
    try:
        for path in images:
            sample = generate_sample(cfg, "val", int(path.stem))
            runs = {}
            for name, f in (("orig", path), ("cf", cf_folder / "images" / "val" / path.name)):
                x, r = network_input(net, read_image(f), cfg.width)
                if abs(r - 1.0) > 1e-6:
                    raise SystemExit(f"cue_attention.py: {f} was rescaled (r={r}); the strip must be fed at its width")
                seen.clear()
                with torch.no_grad():
                    net(x)
                runs[name] = dict(seen)
            H, W = x.shape[2:]
            for i, block in layers.items():
                (xin, xout), (cin, cout) = runs["orig"][i], runs["cf"][i]
                h, w = xin.shape[2:]
                stats[i]["grid"] = (h, w)
                cells = sorted({_cell(b, h, w, H, W) for _, b in sample.objects})
                if not cells:
                    continue
                with torch.no_grad():
                    attn = block.pairwise_weights(xin)[0]  # (N, N')
                hk, wk = block.keys_shape((h, w))
                cue = _cells_overlapping(sample.cue[1], W / wk, H / hk, wk, hk)
                uniform = len(cue) / attn.shape[1]
                for yy, xx in cells:
                    for key, a, b in (("in", xin, cin), ("out", xout, cout)):
                        ref = float(a[0, :, yy, xx].norm())
                        stats[i][key].append(float((b[0, :, yy, xx] - a[0, :, yy, xx]).norm()) / max(ref, 1e-12))
                    m = float(attn[yy * w + xx, cue].sum())
                    stats[i]["share"].append(m)
                    stats[i]["ratio"].append(m / uniform)
    finally:
        for hook in hooks:
            hook.remove()
    mean = lambda v: statistics.fmean(v) if v else None  # noqa: E731
    return [{"layer": i, "grid": s["grid"], "targets": len(s["in"]), "effect_in": mean(s["in"]),
             "effect_out": mean(s["out"]), "share": mean(s["share"]), "ratio": mean(s["ratio"])}
            for i, s in stats.items()]  # fmt: skip


def probe(weights: Path, folder: Path, layers: list[int], n_images: int, folds: int = 5, ridge: float = 10.0) -> dict[int, float]:
    """Cross-validated accuracy of a ridge classifier of the cue's colour from layer ``l``'s feature at the
    cue's centre cell, for each ``l`` of ``layers`` (the first ``n_images`` test images; folds interleaved)."""
    import numpy as np
    import torch

    from yolo_nonlocal.data.synthetic import generate_sample
    from yolo_nonlocal.tools.inference import load_model, network_input, read_image

    cfg = _config(folder)
    net = load_model(str(weights), "cue_attention.py")
    if max(layers) >= len(net.model):
        raise SystemExit(f"cue_attention.py: --probe {max(layers)}: the model has {len(net.model)} layers")
    seen: dict[int, torch.Tensor] = {}
    hooks = [net.model[i].register_forward_hook(lambda m, inp, out, i=i: seen.__setitem__(i, out)) for i in layers]
    feats: dict[int, list] = {i: [] for i in layers}
    labels = []
    try:
        for path in sorted((folder / "images" / "val").glob("*.png"))[:n_images]:
            sample = generate_sample(cfg, "val", int(path.stem))
            x, _ = network_input(net, read_image(path), cfg.width)
            with torch.no_grad():
                net(x)
            for i in layers:
                f = seen[i]
                cy, cx = _cell(sample.cue[1], *f.shape[2:], *x.shape[2:])
                feats[i].append(f[0, :, cy, cx].float().numpy())
            labels.append(sample.cue[0])
    finally:
        for hook in hooks:
            hook.remove()
    y = np.array(labels)
    if len(set(labels)) < 2 or len(y) < folds:
        raise SystemExit(f"cue_attention.py: --probe needs both cue colours in at least {folds} images; use more --images")
    order = np.random.default_rng(0).permutation(len(y))
    out = {}
    for i in layers:
        f = np.stack(feats[i])
        f = (f - f.mean(0)) / (f.std(0) + 1e-6)
        hits = 0
        for k in range(folds):
            test = order[k::folds]
            train = np.setdiff1d(order, test)
            a = np.c_[f[train], np.ones(len(train))]
            coef = np.linalg.solve(a.T @ a + ridge * np.eye(a.shape[1]), a.T @ (2.0 * y[train] - 1))
            hits += int(((np.c_[f[test], np.ones(len(test))] @ coef > 0) == (y[test] == 1)).sum())
        out[i] = hits / len(y)
    return out


def _name(weights: Path) -> str:
    parts = weights.resolve().parts
    return parts[-3] if len(parts) >= 3 and parts[-2] == "weights" else weights.stem


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("models", nargs="+", help="run folders (OUT/runs/farcue/<run>) or checkpoints")
    p.add_argument("--data", help="the farcue test split's folder (default: found next to the runs)")
    p.add_argument("--images", type=int, default=40, help="test images to use (default 40)")
    p.add_argument("--probe", metavar="LAYERS", help="comma-separated layer indices: the linear probe of the cue's "
                   "colour (e.g. 9,16) instead of the block table")
    args = p.parse_args(argv)
    if args.images < 1:
        p.error("--images must be >= 1")
    if args.probe:
        try:
            layers = [int(v) for v in args.probe.split(",") if v.strip()]
        except ValueError:
            p.error(f"--probe takes layer indices such as 9,16, got {args.probe!r}")
        print("| model | " + " | ".join(f"layer {i}: cue colour decodable (5-fold accuracy)" for i in layers) + " |")
        print("|---|" + "---:|" * len(layers))
        for spec in args.models:
            w = _weights(spec)
            acc = probe(w, _test_folder(w, args.data), layers, args.images)
            print(f"| {_name(w)} | " + " | ".join(f"{acc[i]:.2f}" for i in layers) + " |")
            sys.stdout.flush()
        return 0
    print("| model | layer | grid (h x w) | targets | cue effect on the block's input | on its output | attention on the cue | x uniform |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for spec in args.models:
        w = _weights(spec)
        folder = _test_folder(w, args.data)
        cf = folder.with_name(folder.name.replace("farcue-test-", "farcue-test-cf-"))
        if not (cf / "images" / "val").is_dir():
            raise SystemExit(f"cue_attention.py: no counterfactual split {cf} next to {folder}")
        for row in measure(w, folder, cf, args.images):
            g = f"{row['grid'][0]} x {row['grid'][1]}" if row["grid"] else "-"
            fmt = lambda v, f: "-" if v is None else format(v, f)  # noqa: E731
            print(f"| {_name(w)} | {row['layer']} | {g} | {row['targets']} | {fmt(row['effect_in'], '.1%')} | "
                  f"{fmt(row['effect_out'], '.1%')} | {fmt(row['share'], '.3f')} | {fmt(row['ratio'], '.1f')}x |")  # fmt: skip
        sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
