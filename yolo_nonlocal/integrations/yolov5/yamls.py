"""The Non-local model YAMLs a patched tree gets: which ones, from where, and only those that build there.

The package ships them in ``model_yamls/yolov5/`` and ``model_yamls/yolov7/``. The YOLOv5 ones use SPPF,
which YOLOv5 v6.0 introduced; a v5.x tree has only SPP. SPPF(k=5) and SPP(k=(5, 9, 13)) are the same
function with the same weights (two 5x5 max-pools in a row are one 9x9 max-pool, three are a 13x13 one; the
1x1 convolutions around the pools are the same), so such a tree gets the same YAML with the SPPF row written
as SPP. A YAML naming any other layer the tree does not define is not copied, with a note saying so, so that
the patch never leaves a YAML that cannot build (``NameError`` in parse_model); a tree whose models are
anchor-free (YOLOv7 u6) gets none of the anchor-based YAMLs.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from yolo_nonlocal.integrations.yolov5.tree import PatchError, defined_names

__all__ = ["ANCHOR_FREE_HEADS", "YAMLS", "YamlCopy", "plan_yamls", "source_yaml_dir", "spp_variant", "yaml_modules"]

# (path in model_yamls/, path in the tree) per flavour
YAMLS: dict[str, tuple[tuple[str, str], ...]] = {
    "yolov5": tuple((f"yolov5/yolov5{s}-nl.yaml", f"models/yolov5{s}-nl.yaml") for s in "nsmlx"),
    "yolov7": (
        ("yolov7/yolov7-nl.yaml", "cfg/training/yolov7-nl.yaml"),
        ("yolov7/yolov7-tiny-nl.yaml", "cfg/training/yolov7-tiny-nl.yaml"),
    ),
}

# YOLOv7's u6 branch builds its DetectionModel for anchor-free heads only: an anchor YAML (Detect, IDetect)
# fails there at the stride probe ("too many values to unpack"), the stock ones of YOLOv5 included (measured)
ANCHOR_FREE_HEADS = frozenset({"V6Detect", "IV6Detect"})
ANCHOR_HEADS = frozenset({"Detect", "IDetect"})
_SPPF_ROW = re.compile(r"\bSPPF, \[(?P<c2>[^,\]]+), 5\]")
_SPP_NOTE = ("# yolo-nonlocal: this tree has SPP but no SPPF (YOLOv5 before v6.0), so the SPPF row is written as\n"
             "# SPP(k=(5, 9, 13)): the same function and weights.\n")


@dataclass(frozen=True)
class YamlCopy:
    """One YAML for a tree: the bytes to copy (None: not copied, ``note`` says why) and how they were made."""

    src: str  # path in model_yamls/
    dst: str  # path in the tree
    data: bytes | None
    note: str = ""  # "" for the packaged file as it is; else the variant, or why it is skipped


def source_yaml_dir() -> Path:
    """The folder holding the shipped model YAMLs (:func:`yolo_nonlocal.utils.model_yamls.model_yaml_dir`)."""
    from yolo_nonlocal.utils.model_yamls import model_yaml_dir

    try:
        return model_yaml_dir()
    except FileNotFoundError as e:
        raise PatchError(str(e).removeprefix("yolo-nonlocal: ")) from None


def yaml_modules(text: str) -> list[str]:
    """The module names of a model YAML's rows (``nn.*`` excluded), in order, each once."""
    import yaml

    d = yaml.safe_load(text) or {}
    names: list[str] = []
    for row in list(d.get("backbone") or []) + list(d.get("head") or []):
        m = row[2] if isinstance(row, (list, tuple)) and len(row) >= 3 else None
        if isinstance(m, str) and not m.startswith("nn.") and m not in names:
            names.append(m)
    return names


def spp_variant(text: str) -> str:
    """The YAML ``text`` with its ``SPPF, [c, 5]`` rows written as ``SPP, [c, [5, 9, 13]]`` (see the module doc)."""
    body = _SPPF_ROW.sub(lambda m: f"SPP, [{m.group('c2')}, [5, 9, 13]]", text)
    body = body.replace("(v6.0 or later: SPPF)", "(v5.x, with SPP)").replace("SPPF", "SPP")
    first, _, rest = body.partition("\n")
    return f"{first}\n{_SPP_NOTE}{rest}"


def plan_yamls(root: Path, flavour: str, names: frozenset[str] | None = None) -> list[YamlCopy]:
    """The YAMLs to copy into the tree at ``root`` for ``flavour``: packaged, an SPP variant, or skipped.

    ``names``: the layer names the tree defines (default: read from its models/*.py); NonLocal comes with
    the patch.
    """
    src_dir = source_yaml_dir()
    names = (names if names is not None else defined_names(root)) | {"NonLocal"}
    anchor_free = bool(names & ANCHOR_FREE_HEADS)
    out = []
    for src_rel, dst_rel in YAMLS[flavour]:
        try:
            data = (src_dir / src_rel).read_bytes()
        except OSError:
            raise PatchError(f"the package is missing {src_dir / src_rel}; reinstall yolo-nonlocal") from None
        text = data.decode("utf-8")
        modules = yaml_modules(text)
        missing = [m for m in modules if m not in names]
        if anchor_free and set(modules) & ANCHOR_HEADS:
            out.append(YamlCopy(src_rel, dst_rel, None, "not copied: this tree's models are anchor-free (YOLOv7 u6, "
                                "V6Detect heads) and build no anchor-based YAML, stock ones included; add NonLocal "
                                "rows to its own cfg/yolov7.yaml"))
        elif missing == ["SPPF"] and "SPP" in names:
            out.append(YamlCopy(src_rel, dst_rel, spp_variant(text).encode("utf-8"),
                                "SPP variant (the tree has no SPPF)"))
        elif missing:
            out.append(YamlCopy(src_rel, dst_rel, None,
                                f"not copied: it uses {', '.join(missing)}, which this tree does not define"))
        else:
            out.append(YamlCopy(src_rel, dst_rel, data))
    return out
