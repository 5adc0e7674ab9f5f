"""Synthetic YOLOv5/YOLOv7 trees for the tests of yolo_nonlocal.integrations.yolov5, and helpers to compare trees.

One tree per upstream layout of the lines the patcher touches (star import, named imports,
``yolov5.``-prefixed imports of the pip package, YOLOv7's long parse_model, a v5.x tree without SPPF, CRLF).
Their code is written for these tests (a tiny parse_model in the upstream style, stub layer classes), not
upstream code.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from yolo_nonlocal.integrations.yolov5.yamls import plan_yamls

REPO = Path(__file__).resolve().parents[3]
PATCHES = REPO / "patches"
CLI = str(Path(sys.executable).parent / "yolo-nonlocal")


_COMMON = '''\
import torch.nn as nn


class Conv(nn.Module):
    def __init__(self, c1, c2, k=1, s=1):
        super().__init__()
        self.conv = nn.Conv2d(c1, c2, k, s, k // 2)

    def forward(self, x):
        return self.conv(x)


class Concat(nn.Module):
    def __init__(self, dimension=1):
        super().__init__()
        self.d = dimension


# names the shipped -nl YAMLs use: the patcher copies a YAML only where the tree defines its layers
class C3(Conv):
    pass


class Detect(nn.Module):
    pass


class MP(nn.Module):
    pass


class SP(nn.Module):
    pass


class SPPCSPC(Conv):
    pass


class RepConv(Conv):
    pass
'''
_SPPF = "\n\nclass SPPF(Conv):\n    pass\n"
_SPP = "\n\nclass SPP(Conv):\n    pass\n"

# The loop of parse_model the upstream trees share: eval the module name in this file's globals, a branch
# per module kind, channel bookkeeping in ch. The BatchNorm2d branch is the anchor the patcher uses.
_LOOP_V5 = '''\
    layers, ch = [], [ch]
    for i, (f, n, m, args) in enumerate(d["backbone"] + d["head"]):
        m = eval(m) if isinstance(m, str) else m
        for j, a in enumerate(args):
            with contextlib.suppress(NameError):
                args[j] = eval(a) if isinstance(a, str) else a
        if m in {{Conv}}:
            c1, c2 = ch[f], make_divisible(args[0] * gw)
            args = [c1, c2, *args[1:]]
{extra}        elif m is nn.BatchNorm2d:
            args = [ch[f]]
        elif m is Concat:
            c2 = sum(ch[x] for x in f)
        else:
            c2 = ch[f]
        layers.append(m(*args))
        ch.append(c2)
    return layers, ch[1:]
'''

_HEADER_STAR = '''\
"""A test-written stand-in for the models/yolo.py of a {what} tree."""

import contextlib
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
if str(ROOT) not in sys.path:
    sys.path.append(str(ROOT))

{imports}


def make_divisible(x, d=8):
    return max(d, int(x + d - 1) // d * d)


class Model:
    def __init__(self, d):
        self.layers, self.ch = parse_model(d, 3)


def parse_model(d, ch):  # model dict, input channels
    gw = d["width_multiple"]
'''

LAYOUTS = {
    # YOLOv5 v5.0 .. v7.0: star import of models.common
    "yolov5-star": dict(
        flavour="yolov5",
        imports="from models.common import *\nfrom models.experimental import *",
        loop=_LOOP_V5,
        package="",
    ),
    # YOLOv5 v5.x: star import, SPP but no SPPF (the patch copies the SPP variant of the YOLOv5 YAMLs)
    "yolov5-v5": dict(
        flavour="yolov5",
        imports="from models.common import *\nfrom models.experimental import *",
        loop=_LOOP_V5,
        package="",
        spp_only=True,
    ),
    # YOLOv5 master (2024+, ultralytics/yolov5 #12576): names imported one by one, in parentheses
    "yolov5-named": dict(
        flavour="yolov5",
        imports="import torch.nn as nn\n\nfrom models.common import (\n    Concat,\n    Conv,\n)\n"
        "from models.experimental import MixConv2d",
        loop=_LOOP_V5,
        package="",
    ),
    # the `yolov5` pip package: the same code under a `yolov5.` package prefix
    "yolov5-pip": dict(
        flavour="yolov5",
        imports="from yolov5.models.common import *\nfrom yolov5.models.experimental import *",
        loop=_LOOP_V5,
        package="yolov5",
    ),
    # YOLOv7 main: star import after other statements, long multi-line list of modules, bare except
    "yolov7": dict(
        flavour="yolov7",
        imports="import logging\nlogger = logging.getLogger(__name__)\nimport torch\nfrom models.common import *\n"
        "from models.experimental import *",
        loop=_LOOP_V5.replace("with contextlib.suppress(NameError):\n                args[j]", "try:\n"
                              "                args[j]").replace(
            "eval(a) if isinstance(a, str) else a\n", "eval(a) if isinstance(a, str) else a\n            except:\n"
            "                pass\n", 1).replace("if m in {{Conv}}:", "if m in [nn.Conv2d, Conv,\n"
                                               "                 Conv, Conv]:"),
        package="",
    ),
}
# YOLOv7 trees define IDetect in models/yolo.py
LAYOUTS["yolov7"]["extra_defs"] = "\n\nclass IDetect:\n    pass\n"


def write_tree(root: Path, layout: str, crlf: bool = False) -> Path:
    """Write a synthetic clone of the given layout at root and return root."""
    spec = LAYOUTS[layout]
    base = root / spec["package"] if spec["package"] else root
    (base / "models").mkdir(parents=True)
    (base / "utils").mkdir()
    (base / "models" / "__init__.py").write_text("")
    (base / "utils" / "__init__.py").write_text("")
    (base / "models" / "common.py").write_text(_COMMON + (_SPP if spec.get("spp_only") else _SPP + _SPPF))
    (base / "models" / "experimental.py").write_text("class MixConv2d:\n    pass\n")
    if spec["package"]:
        (base / "__init__.py").write_text("")
    src = _HEADER_STAR.format(what=layout, imports=spec["imports"]) + spec["loop"].format(extra="")
    if spec["flavour"] == "yolov7":
        src = src.replace('\n\ndef make_divisible', spec["extra_defs"] + '\n\ndef make_divisible')
        (root / "cfg" / "training").mkdir(parents=True)
        (root / "cfg" / "training" / "yolov7.yaml").write_text("# stock config stand-in\n")
    if "nn.BatchNorm2d" in src and "import torch.nn as nn" not in spec["imports"]:
        src = src.replace("import contextlib\n", "import contextlib\n\nimport torch.nn as nn\n")
    if crlf:
        src = src.replace("\n", "\r\n")
    (base / "models" / "yolo.py").write_bytes(src.encode())
    (root / "train.py").write_text("# stand-in\n")
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file under root (relative path -> bytes), caches excluded."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and "__pycache__" not in p.parts
    }


def tree_dirs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir() and "__pycache__" not in p.parts}


def tree_root(tmp_path: Path, layout: str) -> Path:
    """The folder to patch: the package folder for the pip layout, else the clone root."""
    root = write_tree(tmp_path / "clone", layout)
    return root / LAYOUTS[layout]["package"] if LAYOUTS[layout]["package"] else root


def expected_yamls(root: Path, flavour: str) -> dict[str, bytes]:
    """Tree path -> the bytes the patcher copies there (the packaged YAML or its variant for this tree)."""
    return {c.dst: c.data for c in plan_yamls(root, flavour) if c.data is not None}


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """The installed console script in a subprocess (smoke tests and pipes; behaviour is tested in-process)."""
    return subprocess.run([CLI, *args], capture_output=True, text=True, cwd=cwd, env=env, timeout=120)


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``yolo-nonlocal ARGS`` in this process: (exit status, stdout, stderr)."""
    from yolo_nonlocal.cli import main

    capsys.readouterr()
    rc = main(list(args))
    out = capsys.readouterr()
    return rc, out.out, out.err
