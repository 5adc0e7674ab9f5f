"""Why do Non-local blocks inserted into a trained YOLO stay near the identity? The gradient they get.

The paper's fine-tune protocol inserts blocks whose W_z BatchNorm weight (gamma) is zero, so the network
starts as the trained baseline. At that point the loss gradient reaches nothing inside a block but W_z's
BatchNorm weight and bias: theta, phi, g and W_z's convolution get exactly zero (their path is multiplied
by gamma = 0), so a block can only start learning once gamma has grown. This script measures, on the
first training batches, the detection loss's gradient with respect to each block's gamma, next to the
gradient every other BatchNorm weight of the same network gets:

  |grad| ratio   median over channels of the mean |d loss / d gamma| over batches, divided by the median of
                 the same for all the network's other BatchNorm weights
  coherence      per channel |sum over batches of grad| / sum over batches of |grad|, median over channels:
                 1 when every batch pushes gamma the same way, about 1/sqrt(batches) for random signs; an
                 optimiser's steps on a parameter with low coherence cancel out
  inner grads    the largest |gradient| of theta, phi, g and W_z's convolution (0 at insertion, as designed)

Given a trained Non-local checkpoint as --model, the same is measured where training left the blocks: a
coherence near the random level there says gamma has settled where the loss no longer pushes it.

    python benchmarks/insertion_gradient.py --baseline runs/.../yolov8n/weights/best.pt --data DATA.yaml \\
        [--model yolov8n-nl.yaml] [--batch 8] [--batches 20]
    python benchmarks/insertion_gradient.py --model runs/.../yolov8n-nl/weights/best.pt --data DATA.yaml

The batches are the first images of the training split in file order, at their stored size (square
synthetic images need no letterbox; other images are letterboxed to --imgsz), with the loss in train
mode (BatchNorm on batch statistics), as in the first steps of a fine-tune.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

os.environ.setdefault("YOLO_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402


def _batches(data_yaml: Path, batch: int, count: int, imgsz: int):
    import cv2
    import yaml

    spec = yaml.safe_load(data_yaml.read_text())
    root = Path(spec.get("path") or data_yaml.parent)
    if not root.is_absolute():
        root = data_yaml.parent / root
    images = sorted((root / spec["train"]).glob("*.png")) + sorted((root / spec["train"]).glob("*.jpg"))
    if len(images) < batch:
        raise SystemExit(f"{root / spec['train']} holds {len(images)} images, fewer than --batch {batch}")
    from yolo_nonlocal.tools.inference import letterbox as _letterbox

    for b in range(min(count, len(images) // batch)):
        imgs, idx, cls, boxes = [], [], [], []
        for k, path in enumerate(images[b * batch : (b + 1) * batch]):
            img = cv2.imread(str(path))
            h, w = img.shape[:2]
            boxed, r = _letterbox(img, imgsz, 32)
            imgs.append(torch.from_numpy(np.ascontiguousarray(boxed[:, :, ::-1].transpose(2, 0, 1))).float() / 255)
            label = Path(str(path).replace(f"{os.sep}images{os.sep}", f"{os.sep}labels{os.sep}")).with_suffix(".txt")
            rows = [list(map(float, line.split())) for line in label.read_text().splitlines() if line.strip()] if label.is_file() else []
            ph, pw = boxed.shape[:2]
            for c, x, y, bw, bh in rows:  # normalised to the letterboxed input
                idx.append(k)
                cls.append(c)
                boxes.append([x * w * r / pw, y * h * r / ph, bw * w * r / pw, bh * h * r / ph])
        yield {
            "img": torch.stack(imgs),
            "batch_idx": torch.tensor(idx, dtype=torch.float32),
            "cls": torch.tensor(cls, dtype=torch.float32).view(-1, 1),
            "bboxes": torch.tensor(boxes, dtype=torch.float32).view(-1, 4),
        }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--baseline", help="the trained baseline checkpoint (.pt) the blocks are inserted into")
    p.add_argument("--data", required=True, help="the dataset's data.yaml (its training split is read)")
    p.add_argument("--model", default="yolov8n-nl.yaml",
                   help="the Non-local model YAML the baseline is loaded into, or a trained Non-local checkpoint "
                   "(.pt) to measure as it is (for example after the fine-tune)")  # fmt: skip
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=20)
    p.add_argument("--imgsz", type=int, default=256)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    if args.model.endswith(".pt"):
        if not Path(args.model).is_file():
            p.error(f"--model {args.model} does not exist")
    elif not args.baseline or not Path(args.baseline).is_file():
        p.error(f"--baseline {args.baseline} does not exist (give the trained baseline to insert the blocks into)")

    import yolo_nonlocal
    from ultralytics import YOLO
    from ultralytics.cfg import get_cfg
    from ultralytics.nn.tasks import DetectionModel

    from yolo_nonlocal.utils.machine import describe_machine
    from yolo_nonlocal.nonlocal_block import NonLocal

    yolo_nonlocal.register()
    torch.manual_seed(args.seed)
    torch.set_num_threads(1)
    if args.model.endswith(".pt"):  # a trained Non-local checkpoint: measured as it is
        net = YOLO(args.model).model.float()
        state = f"{args.model} as trained"
    else:
        base = YOLO(args.baseline).model.float()
        net = DetectionModel(args.model, nc=base.nc, verbose=False)  # the baseline's classes, so the head fits too
        net.load(base)  # through the package's index remapping: every baseline tensor lands
        state = f"{args.model} with {args.baseline} loaded (blocks = identity)"
    net.args = get_cfg()  # the loss's default hyperparameters (box, cls, dfl gains)
    for param in net.parameters():  # a loaded checkpoint comes frozen
        param.requires_grad_(True)
    net.train()
    blocks = {i: m for i, m in enumerate(net.model) if isinstance(m, NonLocal)}
    if not blocks:
        p.error(f"--model {args.model} has no NonLocal layer")
    bn_block = {id(m.w_z[1].weight): i for i, m in blocks.items()}
    bns = [(n, m.weight) for n, m in net.named_modules() if isinstance(m, torch.nn.BatchNorm2d)]
    grads: dict[str, list[torch.Tensor]] = {n: [] for n, _ in bns}
    inner = {i: 0.0 for i in blocks}
    n_batches = 0
    for batch in _batches(Path(args.data), args.batch, args.batches, args.imgsz):
        net.zero_grad(set_to_none=True)
        loss, _ = net.loss(batch)
        loss.sum().backward()
        for n, w in bns:
            grads[n].append(w.grad.detach().clone() if w.grad is not None else torch.zeros_like(w))
        for i, m in blocks.items():
            for conv in (m.theta, m.phi, m.g, m.w_z[0]):
                if conv is not None and conv.weight.grad is not None:
                    inner[i] = max(inner[i], float(conv.weight.grad.abs().max()))
        n_batches += 1

    def stats(gs: list[torch.Tensor]) -> tuple[float, float]:
        g = torch.stack(gs)  # (batches, channels)
        mag = g.abs().mean(0)
        coherence = g.sum(0).abs() / g.abs().sum(0).clamp_min(1e-30)
        return float(mag.median()), float(coherence.median())

    names = {id(w): n for n, w in bns}
    others = [stats(grads[n]) for n, w in bns if id(w) not in bn_block]
    other_mag = statistics.median(m for m, _ in others)
    other_coh = statistics.median(c for _, c in others)
    print(f"# {describe_machine()}")
    print(f"# {state}; {n_batches} training batches of {args.batch} "
          f"from {args.data} at {args.imgsz} px; loss in train mode")  # fmt: skip
    print(f"# random signs would give a coherence of about {1 / np.sqrt(max(n_batches, 1)):.2f}")
    print("| BatchNorm weight | median mean abs(grad) | ratio to the other BN weights | median coherence | largest inner grad |")
    print("|---|---:|---:|---:|---:|")
    for w_id, i in bn_block.items():
        mag, coh = stats(grads[names[w_id]])
        gamma = float(blocks[i].w_z[1].weight.detach().abs().mean())
        print(f"| NonLocal layer {i} W_z (mean abs(gamma) {gamma:.4f}) | {mag:.3g} | {mag / other_mag:.3f} | {coh:.2f} | {inner[i]:.3g} |")
    print(f"| the other {len(others)} BatchNorm weights (median) | {other_mag:.3g} | 1 | {other_coh:.2f} | - |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
