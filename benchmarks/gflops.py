"""Parameters and GFLOPs (attention included) of stock and Non-local YOLO models, as Ultralytics reports them.

Ultralytics' thop-based counter hooks convolutions; yolo-nonlocal adds each block's attention products
(``NonLocal.attention_macs`` at the block's real input size, GFLOPs = 2 x MACs). This prints the summary
figures quoted in the README and docs/ultralytics.md, with the attention share separated. ``--fused`` counts
the fused model (Conv+BN folded), as ``yolo predict`` and benchmarks/model.py's table do; the attention share
is the same either way (BN folding touches only the convolutions).

    python benchmarks/gflops.py [--imgsz 640] [--fused] [--models yolov8n.yaml,yolov8n-nl.yaml,...]
"""

from __future__ import annotations

import argparse
import os

os.environ.setdefault("YOLO_OFFLINE", "1")

DEFAULT_MODELS = ("yolov8n.yaml,yolov8n-nl.yaml,yolov8n-nl-full.yaml,yolov8s.yaml,yolov8s-nl.yaml,yolov8s-nl-full.yaml,yolo11n.yaml,"
                  "yolo11n-nl.yaml,yolo11n-nl-full.yaml,yolov8n-nl-p2.yaml,yolo12n.yaml")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--models", default=DEFAULT_MODELS)
    p.add_argument("--fused", action="store_true", help="count the fused model (Conv+BN folded)")
    args = p.parse_args()

    from ultralytics.nn.tasks import DetectionModel
    from ultralytics.utils.torch_utils import get_flops

    from yolo_nonlocal.utils.machine import describe_machine
    from yolo_nonlocal.integrations.ultralytics.flops import attention_gflops

    print(f"# machine: {describe_machine()}; imgsz {args.imgsz}, nc 80{', fused' if args.fused else ''}")
    print("| model | params (M) | GFLOPs | of which attention |")
    print("|---|---:|---:|---:|")
    for name in args.models.split(","):
        model = DetectionModel(name, nc=80, verbose=False)
        if args.fused:
            model = model.fuse(verbose=False)
        params = sum(t.numel() for t in model.parameters()) / 1e6
        total = get_flops(model, args.imgsz)
        attn = attention_gflops(model, args.imgsz)
        print(f"| {name} | {params:.2f} | {total:.1f} | {attn:.2f} |", flush=True)


if __name__ == "__main__":
    main()
