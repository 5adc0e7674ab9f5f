"""Checkpoints and export of models with blocks: weights-only loading, and the ONNX opset guard.

- ``ULTRALYTICS_SAFE_LOAD=1`` loads checkpoints with ``torch.load(weights_only=True)`` and an allow-list;
  :func:`allow_safe_load` adds the block classes to torch's list (:func:`disallow_safe_load` takes them off).
- The fused attention exports as ``scaled_dot_product_attention``, which ONNX has from opset 14:
  :func:`export_guard` (an ``on_export_start`` default callback) refuses a lower opset before tracing starts.

A checkpoint names its block classes by import path (``yolo_nonlocal.nonlocal_block.NonLocal``, frozen), so
it loads wherever yolo-nonlocal is installed. Where it is not, unpickling fails before any code of this
package can run; docs/ultralytics.md says what Ultralytics then does and how to install the package.
"""

from __future__ import annotations

__all__ = ["allow_safe_load", "disallow_safe_load", "export_guard", "add_export_guard", "remove_export_guard",
           "ONNX_FORMATS"]

# formats whose exporters go through torch.onnx.export with the `opset` argument
ONNX_FORMATS = frozenset({"onnx", "engine", "mnn", "ncnn", "rknn", "paddle", "litert", "tflite", "tfjs",
                          "saved_model", "pb", "imx", "ascend", "xilinx", "axelera"})


def allow_safe_load(_module=None) -> None:
    """Let ``torch.load(weights_only=True)`` rebuild the block classes (torch >= 2.4; a no-op before)."""
    import torch

    from yolo_nonlocal.integrations.ultralytics import blocks

    add = getattr(getattr(torch, "serialization", None), "add_safe_globals", None)
    if add is not None:
        add(list(blocks.block_types()))


def disallow_safe_load(_module=None) -> None:
    """Take the block classes off torch's weights-only allow-list, leaving everything else on it."""
    import torch

    from yolo_nonlocal.integrations.ultralytics import blocks

    ser = getattr(torch, "serialization", None)
    get, clear, add = (getattr(ser, n, None) for n in ("get_safe_globals", "clear_safe_globals", "add_safe_globals"))
    if get is None or clear is None or add is None:
        return
    ours = set(blocks.block_types())
    keep = [g for g in get() if (g[0] if isinstance(g, tuple) else g) not in ours]
    clear()
    if keep:
        add(keep)


def export_guard(exporter) -> None:
    """``on_export_start`` callback: refuse an ONNX opset below the block's minimum before anything is traced."""
    from yolo_nonlocal.nonlocal_block import ONNX_MIN_OPSET, NonLocal

    args = getattr(exporter, "args", None)
    opset = getattr(args, "opset", None)
    fmt = str(getattr(args, "format", "")).lower()
    model = getattr(exporter, "model", None)
    if not opset or fmt not in ONNX_FORMATS or model is None:
        return
    if int(opset) < ONNX_MIN_OPSET and any(isinstance(m, NonLocal) for m in model.modules()):
        raise ValueError(
            f"yolo-nonlocal: this model has NonLocal blocks, whose attention exports to ONNX from opset "
            f"{ONNX_MIN_OPSET} on; opset={opset} was asked. Export with opset={ONNX_MIN_OPSET} or newer "
            f"(or leave opset unset to let Ultralytics choose)."
        )


def add_export_guard(base) -> None:
    """Append :func:`export_guard` to ``base.default_callbacks['on_export_start']`` (idempotent)."""
    hooks = base.default_callbacks.setdefault("on_export_start", [])
    if export_guard not in hooks:
        hooks.append(export_guard)


def remove_export_guard(base) -> None:
    hooks = getattr(base, "default_callbacks", {}).get("on_export_start", [])
    while export_guard in hooks:
        hooks.remove(export_guard)
