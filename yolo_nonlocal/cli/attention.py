"""``yolo-nonlocal attention``: draw where a Non-local block looks for a query pixel.

    yolo-nonlocal attention model=runs/.../best.pt source=image.png query=120,64 [layer=N] [imgsz=S] [project=DIR]

The work is :mod:`yolo_nonlocal.tools.attention_map`; this module only reads the arguments and prints.
"""

from __future__ import annotations

import sys

from yolo_nonlocal.cli.args import Arg, run

COMMAND = "attention"
DESCRIPTION = """Draw where a Non-local block looks from one position: the block's normalised pairwise weights for the
query pixel (X,Y in source-image pixels) over the image, coloured relative to uniform attention (softmax
and concatenation: weight / uniform on a log scale; dot_product: deviation from the row mean), with a
colour bar that marks the uniform level. Writes DIR/<model>_<image>_layer<N>_x<X>_y<Y>.png and the raw
weights (the block's key grid) as .npy beside it, and prints the PNG's path."""


def query_value(text: str) -> tuple[float, float]:
    """``query=X,Y`` in source-image pixels."""
    parts = text.replace(" ", "").strip("()[]").split(",")
    try:
        if len(parts) != 2:
            raise ValueError
        return float(parts[0]), float(parts[1])
    except ValueError:
        raise ValueError("must be X,Y in image pixels (for example query=120,64)") from None


SPEC = [
    Arg("model", required=True, help="a trained Non-local checkpoint (.pt) or a model YAML (untrained weights)"),
    Arg("source", required=True, help="the image"),
    Arg("query", query_value, required=True, help="X,Y of the query pixel in the source image"),
    Arg("layer", int, None, "index of a NonLocal layer (its YAML row); default: the one with the finest grid"),
    Arg("imgsz", int, None, "network input size; default: the size the checkpoint was trained at (else 640)"),
    Arg("project", str, "runs/attention", "output folder"),
]


def _attention(model: str, source: str, query: tuple[float, float], layer: int | None, imgsz: int | None,
               project: str) -> int:
    from yolo_nonlocal.tools.attention_map import attention_map, save
    from yolo_nonlocal.tools.inference import read_image

    img = read_image(source)
    amap = attention_map(model, img, query, layer=layer, imgsz=imgsz)
    png, _ = save(img, amap, project, source)
    print(
        f"layer {amap.layer} ({amap.mode}, grid {amap.grid[0]}x{amap.grid[1]}, query cell {amap.query_cell}): "
        f"weights sum {float(amap.weights.sum()):.4f}, max {amap.weights.max():.4g} "
        f"({amap.weights.max() * amap.n_keys:.3g}x the uniform 1/N' = {amap.uniform:.3g})",
        file=sys.stderr,
    )
    print(png)
    return 0


def main(argv: list[str]) -> int:
    return run(COMMAND, argv, SPEC, _attention, description=DESCRIPTION)
