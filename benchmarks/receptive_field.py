"""How far can a YOLO output cell see? The theoretical receptive field of every Detect level, from the model.

For each model (default yolov8n, yolo11n, yolo26n) and each Detect level (P3/P4/P5), computed by
yolo_nonlocal.data.receptive_field from the built Ultralytics model's own layers (the `f` graph, every
convolution and pooling as applied in a forward pass, upsampling, Concat):

  input RF / reach   the Detect input cell (the P3/P4/P5 feature): the RF's extent in pixels of an interior
                     cell, and the farthest pixel edge from the cell's anchor ((i + 0.5) * stride)
  head RF / reach    the class and box outputs, after the Detect branch's own convolutions: what a
                     detection is computed from, and what the farcue generator keeps its cue beyond
  conv-only          the same with every attention-like layer (C2PSA, PSABlock, A2C2f, NonLocal, ...)
                     reduced to its local operations; with such a layer the real RF is the whole image
                     ("global"): that model is not capped by the farcue task, its conv path would be

--check validates the analytic numbers against the gradient of one output cell w.r.t. the input of a
randomly initialised copy (float64, MaxPool replaced by AvgPool of the same geometry so the gradient shows
the structural dependency): the columns where it is non-zero must be exactly the analytic interval.

    python benchmarks/receptive_field.py [--models yolov8n.yaml,yolo11n.yaml,yolo26n.yaml] [--check]
"""

from __future__ import annotations

import argparse
import os
import sys
import time

os.environ.setdefault("YOLO_OFFLINE", "1")


def table(models: list[str]) -> str:
    from yolo_nonlocal.data.receptive_field import receptive_fields
    from yolo_nonlocal.utils.tables import format_table

    rows = []
    for spec in models:
        for f in receptive_fields(spec):
            g = f.is_global
            rows.append([
                spec, f.level, f.stride, f.layer,
                "global" if g else f"{f.input_size} / {f.input_reach:.0f}",
                "global" if g else f"{f.head_size} / {f.head_reach:.0f}",
                f"{f.conv_input_size} / {f.conv_input_reach:.0f}", f"{f.conv_head_size} / {f.conv_head_reach:.0f}",
                ", ".join(map(str, f.global_layers)) or "-",
            ])  # fmt: skip
    head = ["model", "level", "stride", "layer", "input RF / reach px", "head RF / reach px",
            "conv-only input", "conv-only head", "global layers"]  # fmt: skip
    return format_table(head, rows, markdown=True)


def check(spec: str, width: int) -> tuple[str, bool]:
    from yolo_nonlocal.data.receptive_field import cell_intervals, empirical_field
    from yolo_nonlocal.utils.tables import format_table

    rows, ok = [], True
    for level in range(3):
        for head in (False, True):
            anchors, lo, hi = cell_intervals(spec, width, level=level, head=head)
            for cell in (len(anchors) // 2, len(anchors) // 2 + 1):
                got = empirical_field(spec, level=level, head=head, width=width, height=32, cell=cell)
                same = got == (cell, int(lo[cell]), int(hi[cell]))
                ok &= same
                rows.append([f"P{level + 3}", "head" if head else "input", cell, f"{lo[cell]}..{hi[cell]}",
                             f"{got[1]}..{got[2]}", "yes" if same else "NO"])  # fmt: skip
    text = format_table(["level", "output", "cell", "analytic columns", "gradient non-zero", "equal"], rows, markdown=True)
    return f"Empirical check of {spec} at width {width} (random init, float64, MaxPool -> AvgPool):\n\n{text}", ok


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", default="yolov8n.yaml,yolo11n.yaml,yolo26n.yaml", help="comma list of model specs")
    p.add_argument("--check", action="store_true", help="validate against the gradient of a random model (yolov8n)")
    p.add_argument("--check-model", default="yolov8n.yaml")
    p.add_argument("--width", type=int, default=2048, help="--check: input width (multiple of 32)")
    args = p.parse_args(argv)
    from yolo_nonlocal.data.receptive_field import baseline_reach
    from yolo_nonlocal.utils.machine import describe_machine

    t0 = time.time()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    print(f"# Receptive fields of the Detect levels (pixels along the image width; reach = farthest RF pixel edge "
          f"from the cell's anchor)\n# machine: {describe_machine()}\n")  # fmt: skip
    print(table(models))
    print()
    from yolo_nonlocal.data.receptive_field import receptive_fields

    base = baseline_reach("yolov8n.yaml")
    for spec in models:
        fields = receptive_fields(spec)
        glob = sorted({g for f in fields for g in f.global_layers})
        conv = max(f.conv_head_reach for f in fields)
        if not glob:
            print(f"- {spec}: largest output-cell reach {conv:.0f} px: a cue farther than that from every anchor "
                  "that can detect a target is invisible to it (what kind=farcue rule=far asserts).")  # fmt: skip
        else:
            capped = "is" if conv <= base else "is not"
            print(f"- {spec}: layers {glob} are attention-like, so every output cell sees the whole image. Its "
                  f"conv-only path reaches {conv:.0f} px, so the farcue task (built for yolov8n's {base:.0f} px) "
                  f"{capped} beyond that path too; through its attention it can see the cue (a peer, not "
                  "a capped baseline).")  # fmt: skip
    ok = True
    if args.check:
        text, ok = check(args.check_model, args.width)
        print("\n" + text)
    print(f"\n{time.time() - t0:.0f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
