"""``yolo-nonlocal usage``: how far a trained model's Non-local blocks moved from the identity, and how.

    yolo-nonlocal usage model=runs/.../best.pt source=IMAGES_DIR_OR_IMAGE [imgsz=S] [max_images=N] [queries=64]

The work is :func:`yolo_nonlocal.tools.block_usage.block_usage`; this module only reads the arguments and prints.
"""

from __future__ import annotations

from yolo_nonlocal.cli.args import Arg, run

COMMAND = "usage"
DESCRIPTION = """How far each Non-local block of a trained model is from the identity it started as, and what kind of
change it makes, averaged over the images: the block's residual norm(W_z y)/norm(x) split into its constant
part (W_z y's per-channel spatial mean: BatchNorm's beta and any spatially constant context) and its
position-varying part, W_z's mean |gamma| and |beta|, and the query distance (mean cosine distance between
the attention maps of different query positions; near 0: every query sees the same map, as GCNet found)."""
EPILOG = """A block whose residual is mostly its constant part acts as a learned bias, not as attention. Ablations
(Python): yolo_nonlocal.tools.block_usage.reset_nonlocal_to_identity_, zero_nonlocal_gamma_ and
replace_y_by_spatial_mean. See docs/compare.md."""


def _non_negative(text: str) -> int:
    value = int(text)
    if value < 0:
        raise ValueError("must be >= 0 (0 = every image)")
    return value


def _queries(text: str) -> int:
    value = int(text)
    if value < 2:
        raise ValueError("must be at least 2 (a distance needs a pair of queries)")
    return value


SPEC = [
    Arg("model", required=True, help="a trained Non-local checkpoint (.pt) or model YAML"),
    Arg("source", required=True, help="an image or a folder of images (for example the dataset's images/val)"),
    Arg("imgsz", int, None, "network input size; default: the size the checkpoint was trained at (else 640)"),
    Arg("max_images", _non_negative, 50, "how many images of the folder to use (0 = all)"),
    Arg("queries", _queries, 64, "query positions sampled per image for the query distance"),
]


def _usage(model: str, source: str, imgsz: int | None, max_images: int, queries: int) -> int:
    from yolo_nonlocal.tools.block_usage import block_usage, format_usage

    usage, reference = block_usage(model, source, imgsz=imgsz, max_images=max_images or None, shortcuts=True,
                                   queries=queries)
    print(format_usage(usage))
    if reference:
        v = sorted(reference.values())
        print(
            f"\nFor scale, the model's own {len(v)} shortcut bottlenecks: residual median {100 * v[len(v) // 2]:.1f}% "
            f"(range {100 * v[0]:.1f}-{100 * v[-1]:.1f}%)."
        )
    return 0


def main(argv: list[str]) -> int:
    return run(COMMAND, argv, SPEC, _usage, description=DESCRIPTION, epilog=EPILOG)
