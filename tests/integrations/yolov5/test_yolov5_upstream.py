"""Tests of the YOLOv5/YOLOv7 integration on real upstream code, and of the reference diffs in patches/.

- Real upstream code from the package registry, installed outside the venv's site-packages
  (``.venv/upstream``, see the Makefile), turned into clone-like trees in a temporary folder: patch, build
  the -nl models through the tree's own ``Model``, forward/backward, ``train.py`` for one epoch,
  ``attempt_load`` of the result, ``val.py --save-json`` scored by ``yolo_nonlocal.metrics.coco``, unpatch
  and compare every byte. Skipped, with the command to run, when those folders are absent.
- The reference diffs are generated from, and checked against, the real tagged sources by
  ``patches/check_reference_diffs.py`` (needs git clones; run by a maintainer). Offline, these tests check
  what needs no clone: every diff only adds marked lines, its YAMLs are the ones the patcher copies for
  that release, and for the registry wheels whose models/yolo.py is a tagged one (git blob id), the
  patcher's dry run on the wheel reproduces the diff byte for byte and ``git apply --check`` accepts it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from yolov5_trees import PATCHES, REPO, run_cli, snapshot, tree_dirs

from yolo_nonlocal.integrations.yolov5 import (
    YAMLS,
    YOLO_PY,
    patch,
    source_yaml_dir,
    unpatch_source,
)
from yolo_nonlocal.integrations.yolov5.hazards import hazards
from yolo_nonlocal.integrations.yolov5.source_edit import is_marked
from yolo_nonlocal.integrations.yolov5.yamls import spp_variant

UPSTREAM = REPO / ".venv" / "upstream"  # filled by the Makefile (see docs/yolov5_yolov7.md)
INSTALL_HINT = (
    "install the upstream code with: .venv/bin/pip install --no-deps --target .venv/upstream/{name} {spec}"
)


def _unprefix(src_pkg: Path, prefix: str, dst: Path) -> Path:
    """Copy an installed upstream package into a clone-like tree: `from yolov5.x import` -> `from x import`."""
    shutil.copytree(src_pkg, dst, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    pat = re.compile(rf"^(\s*)(from|import) {prefix}\.", re.MULTILINE)
    for f in dst.rglob("*.py"):
        text = f.read_text(encoding="utf-8")
        new = pat.sub(r"\1\2 ", text)
        # the pip package reads its own version; a clone has no such package
        new = re.sub(rf"^from {prefix} import __version__$", '__version__ = "pip"', new, flags=re.MULTILINE)
        if new != text:
            f.write_text(new, encoding="utf-8")
    return dst


def _upstream(name: str, spec: str, inner: str) -> Path:
    path = UPSTREAM / name / inner
    if not (path / "models" / "yolo.py").is_file():
        pytest.skip(f"{path} is absent: " + INSTALL_HINT.format(name=name, spec=spec))
    return path


YOLOV5_70 = ("yolov5", "yolov5==7.0.14", "yolov5")
YOLOV5_62 = ("yolov5-6.2", "yolov5==6.2.3", "yolov5")
YOLOV7 = ("yolov7detect", "yolov7detect==1.0.1", "yolov7")

# The diffs patches/check_reference_diffs.py wrote from real clones, with the git blob id of the tag's
# models/yolo.py (patches/README.md lists the commits) and the YAMLs each carries.
REFERENCE = {
    "yolov5-v5.0.diff": ("f730a1efa3b3", "yolov5", "spp"),
    "yolov5-v6.0.diff": ("497a0e9c24e6", "yolov5", "packaged"),
    "yolov5-v6.1.diff": ("f659a04545b9", "yolov5", "packaged"),
    "yolov5-v6.2.diff": ("df4209726e0d", "yolov5", "packaged"),
    "yolov5-v7.0.diff": ("ed21c067ee93", "yolov5", "packaged"),
    "yolov5-master.diff": ("972690b56e1f", "yolov5", "packaged"),
    "yolov7-main.diff": ("95a019c6aeec", "yolov7", "packaged"),
    "yolov7-u5.diff": ("ac9ac07aff99", "yolov7", "packaged"),
    "yolov7-u6.diff": ("d631c5c8af78", "yolov5", "none"),  # anchor-free: no YAML builds there
}
# registry wheels and the reference diff of the tag whose models/yolo.py they carry
WHEELS = {
    # the 6.2.3 wheel carries v7.0's models/yolo.py (the same blob), not v6.2's: issue 14.3
    "yolov5-6.2": (YOLOV5_62, "yolov5-v7.0.diff", True),
    # 7.0.14 differs from the v7.0 tag in its first line only (the licence name), outside every hunk
    "yolov5": (YOLOV5_70, "yolov5-v7.0.diff", False),
    "yolov7detect": (YOLOV7, "yolov7-main.diff", True),
}


def git_blob(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def split_diff(text: str) -> dict[str, str]:
    """File path -> its section of a git diff."""
    parts = re.split(r"^(?=diff --git )", text, flags=re.MULTILINE)
    return {re.match(r"diff --git a/(\S+) ", p).group(1): p for p in parts if p}


def hunks(section: str) -> list[tuple[list[str], list[str]]]:
    """(pre-image lines, post-image lines) of each hunk of one file's section."""
    out = []
    for h in re.split(r"^@@ .* @@\n", section, flags=re.MULTILINE)[1:]:
        pre, post = [], []
        for line in h.splitlines(keepends=True):
            if line.startswith("\\"):
                continue
            tag, body = line[:1], line[1:]
            if tag in (" ", "-"):
                pre.append(body)
            if tag in (" ", "+"):
                post.append(body)
        out.append((pre, post))
    return out


def test_the_reference_diffs_are_the_ones_listed():
    assert sorted(p.name for p in PATCHES.glob("*.diff")) == sorted(REFERENCE)
    readme = (PATCHES / "README.md").read_text()
    for name, (blob, _, _) in REFERENCE.items():
        assert f"`{name}`" in readme and blob in readme, name


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_reference_diff_adds_only_marked_lines_and_the_patchers_yamls(name):
    _, flavour, yamls = REFERENCE[name]
    sections = split_diff((PATCHES / name).read_text(encoding="utf-8"))
    yolo = sections.pop(YOLO_PY)
    assert "\n-" not in yolo.split("@@", 1)[1]  # nothing removed
    found = hunks(yolo)
    assert len(found) == 2
    for pre, post in found:
        assert all(is_marked(x) for x in post if x not in pre) and len(post) > len(pre)
        assert unpatch_source("".join(post)) == "".join(pre)  # exactly the inverse of unpatching
    assert len(found[0][1]) - len(found[0][0]) == 7 and len(found[1][1]) - len(found[1][0]) == 3
    src = source_yaml_dir()
    expected = {} if yamls == "none" else {d: (src / s).read_text() for s, d in YAMLS[flavour]}
    if yamls == "spp":
        expected = {d: spp_variant(t) for d, t in expected.items()}
    assert sorted(sections) == sorted(expected)
    for dst, text in expected.items():
        (pre, post), = hunks(sections[dst])
        assert pre == [] and "".join(post) == text, dst


@pytest.mark.parametrize("wheel", sorted(WHEELS))
def test_reference_diff_reproduced_on_the_registry_wheel(tmp_path, wheel):
    """The patcher's dry run on the registry wheel's code gives the reference diff, and git applies it there."""
    (name, spec, inner), ref, same_blob = WHEELS[wheel]
    src = _upstream(name, spec, inner)
    tree = tmp_path / "tree"
    (tree / "models").mkdir(parents=True)
    for f in ("yolo.py", "common.py", "experimental.py"):
        text = (src / "models" / f).read_text(encoding="utf-8")
        (tree / "models" / f).write_text(re.sub(rf"^(\s*)(from|import) {inner}\.", r"\1\2 ", text, flags=re.MULTILINE),
                                         encoding="utf-8")
    if REFERENCE[ref][1] == "yolov7":
        (tree / "cfg" / "training").mkdir(parents=True)
    blob = git_blob((tree / "models" / "yolo.py").read_bytes())
    assert blob.startswith(REFERENCE[ref][0]) == same_blob, blob
    assert patch(tree, dry_run=True).diff == (PATCHES / ref).read_text(encoding="utf-8")
    if shutil.which("git"):
        check = subprocess.run(["git", "apply", "--check", str(PATCHES / ref)], cwd=tree, capture_output=True, text=True)
        assert check.returncode == 0, check.stderr


def test_hazards_are_reported_for_the_v70_tree(tmp_path):
    tree = _unprefix(_upstream(*YOLOV5_70), "yolov5", tmp_path / "v5")
    notes = "\n".join(hazards(tree))
    import numpy
    import torch

    if int(numpy.__version__.split(".")[0]) >= 2:
        assert "np.trapz" in notes
    if tuple(int(x) for x in re.findall(r"\d+", torch.__version__)[:2]) >= (2, 6):
        assert "TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" in notes
    assert "Arial.ttf" in notes


# Packages the upstream trees import that are not in the venv live in .venv/upstream/deps; features of the pip
# forks that a git clone does not have (Roboflow upload, Hugging Face hub download) get inert stand-ins, and
# the numpy aliases old trees use are restored: those are the documented workarounds, confined to the
# subprocesses below.
_STUBS = {
    "roboflow/__init__.py": "class Roboflow:\n    pass\n",
    "roboflow/core/__init__.py": "",
    "roboflow/core/version.py": "class Version:\n    pass\n",
    "huggingface_hub/__init__.py": "from .utils._errors import RepositoryNotFoundError\n\n\n"
    "def list_repo_files(*args, **kwargs):\n    raise RepositoryNotFoundError('offline test')\n\n\n"
    "def hf_hub_download(*args, **kwargs):\n    raise RepositoryNotFoundError('offline test')\n",
    "huggingface_hub/utils/__init__.py": "",
    "huggingface_hub/utils/_errors.py": "class RepositoryNotFoundError(Exception):\n    pass\n",
    "huggingface_hub/utils/_validators.py": "class HFValidationError(Exception):\n    pass\n",
    "sitecustomize.py": "import numpy as np\n\nif not hasattr(np, 'trapz'):\n    np.trapz = np.trapezoid\n"
    "for _name, _type in (('int', int), ('float', float), ('bool', bool)):\n"
    "    if _name not in np.__dict__:\n        setattr(np, _name, _type)\n",
}


@pytest.fixture(scope="module")
def upstream_env(tmp_path_factory) -> dict:
    deps = UPSTREAM / "deps"
    if not deps.is_dir():
        pytest.skip(f"{deps} is absent: install the upstream trees' extra imports (see docs/yolov5_yolov7.md)")
    stubs = tmp_path_factory.mktemp("upstream-stubs")
    for rel, text in _STUBS.items():
        (stubs / rel).parent.mkdir(parents=True, exist_ok=True)
        (stubs / rel).write_text(text)
    cfg = tmp_path_factory.mktemp("yolov5-config")
    import matplotlib

    shutil.copy(Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf", cfg / "Arial.ttf")
    env = dict(os.environ)
    env.update(
        PYTHONPATH=os.pathsep.join([str(stubs), str(deps)]),
        YOLOV5_CONFIG_DIR=str(cfg),  # the font YOLOv5 wants to download is already there
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",  # the trees' own torch.load of their own checkpoints
        WANDB_MODE="disabled",
        PYTHONWARNINGS="ignore",
    )
    return env


def _py(code: str, cwd: Path, env: dict, timeout: int = 300) -> str:
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], cwd=cwd, env=env, capture_output=True,
                         text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out.stdout


def _run(args: list[str], cwd: Path, env: dict, timeout: int = 300) -> str:
    out = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-5000:]
    return out.stdout + out.stderr


_BUILD_REAL = '''
import json, torch
from models.yolo import Model
res = {}
for cfg, stock in CFGS:
    m = Model(cfg, ch=3, nc=2)
    blocks = [x for x in m.modules() if type(x).__name__ == "NonLocal"]
    n_nl = sum(p.numel() for b in blocks for p in b.parameters())
    n_all = sum(p.numel() for p in m.parameters())
    n_stock = sum(p.numel() for p in Model(stock, ch=3, nc=2).parameters()) if stock else None
    init = [[sorted({round(v, 6) for v in b.w_z[1].weight.tolist()}), bool(b.phi.weight.abs().sum() == 0)] for b in blocks]
    m.train()
    out = m(torch.rand(2, 3, 64, 64))
    sum(o.float().square().mean() for o in out).backward()
    res[cfg] = dict(blocks=[[b.c1, b.sub_sample, type(b).__module__] for b in blocks], nl=n_nl, all=n_all,
                    stock=n_stock, init=init, grad=all(b.w_z[1].weight.grad.abs().sum().item() > 0 for b in blocks),
                    shapes=[list(o.shape) for o in out])
from models.experimental import attempt_load
m = attempt_load(*LOAD)  # the tree's own loader, as detect.py and val.py call it
blocks = [x for x in m.modules() if type(x).__name__ == "NonLocal"]
res["loaded"] = [len(blocks), type(blocks[0]).__module__, list(m(torch.zeros(1, 3, 64, 64))[0].shape)]
res["count80"] = None
if COUNT80:  # parameters of the NL graph at nc=80 without the two blocks
    m = Model(COUNT80, ch=3, nc=80)
    nl = sum(p.numel() for x in m.modules() if type(x).__name__ == "NonLocal" for p in x.parameters())
    res["count80"] = sum(p.numel() for p in m.parameters()) - nl
print(json.dumps(res))
'''


def _copy_dataset(data_yaml: Path, dst: Path) -> Path:
    """A private copy of the session's tiny dataset (the trees write label caches next to the labels)."""
    shutil.copytree(data_yaml.parent, dst, ignore=shutil.ignore_patterns("*.cache"))
    d = yaml.safe_load(data_yaml.read_text())
    d["path"] = str(dst)
    (dst / "data.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    return dst


@pytest.mark.slow
def test_real_yolov5_v70_tree(tmp_path, upstream_env, tiny_dataset):
    tree = _unprefix(_upstream(*YOLOV5_70), "yolov5", tmp_path / "yolov5")
    before = snapshot(tree)
    out = run_cli("patch", str(tree), env=upstream_env)
    assert out.returncode == 0, out.stderr
    assert "np.trapz" in out.stdout  # the hazard note for numpy 2

    # one epoch of the tree's own train.py on the NL model (it ends by validating best.pt via attempt_load)
    data = _copy_dataset(tiny_dataset, tmp_path / "data") / "data.yaml"
    runs = tmp_path / "runs"
    _run(["train.py", "--data", str(data), "--cfg", "models/yolov5n-nl.yaml", "--weights", "", "--img", "64",
          "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--workers", "0", "--project", str(runs),
          "--name", "train", "--noplots", "--noautoanchor"], tree, upstream_env, timeout=600)
    best = runs / "train" / "weights" / "best.pt"
    assert best.is_file()

    # build n and s through the tree's Model, forward + backward, and load the checkpoint with attempt_load
    code = (f"CFGS = [('models/yolov5n-nl.yaml', 'models/yolov5n.yaml'), ('models/yolov5s-nl.yaml', None)]\n"
            f"import torch\nLOAD = ({str(best)!r}, torch.device('cpu'))\nCOUNT80 = None\n" + _BUILD_REAL)
    res = json.loads(_py(code, tree, upstream_env).splitlines()[-1])
    n, s = res["models/yolov5n-nl.yaml"], res["models/yolov5s-nl.yaml"]
    assert [b[:2] for b in n["blocks"]] == [[256, False], [64, True]]  # P5 after SPPF, pooled P3 (width 0.25)
    assert [b[:2] for b in s["blocks"]] == [[512, False], [128, True]]  # the same rows at width 0.50
    assert {b[2] for b in n["blocks"] + s["blocks"]} == {"yolo_nonlocal.nonlocal_block"}
    assert n["all"] == n["stock"] + n["nl"]  # exactly the stock model plus the two blocks
    assert n["grad"] and s["grad"]
    assert n["init"] == s["init"] == [[[0.3], True]] * 2  # the copied YAMLs' nonlocal_init_* keys reached the blocks
    assert n["shapes"] == [[2, 3, 8, 8, 7], [2, 3, 4, 4, 7], [2, 3, 2, 2, 7]]
    assert res["loaded"][:2] == [2, "yolo_nonlocal.nonlocal_block"]  # the trained blocks, unpickled by path
    assert res["loaded"][2] == [1, 252, 7]  # (8*8 + 4*4 + 2*2) * 3 anchors, 5 + 2 classes

    # val.py --save-json, scored by the package's COCO evaluator
    _run(["val.py", "--data", str(data), "--weights", str(best), "--img", "64", "--batch-size", "4", "--device",
          "cpu", "--workers", "0", "--project", str(runs), "--name", "val", "--save-json", "--conf-thres", "0.001"],
         tree, upstream_env, timeout=600)
    preds = runs / "val" / "best_predictions.json"
    entries = json.loads(preds.read_text())
    assert entries and {e["category_id"] for e in entries} <= {0, 1}  # YOLOv5 writes 0-based classes
    assert {e["image_id"] for e in entries} <= {f"val_{k:03d}" for k in range(4)}  # stems as image ids
    _score_with_coco_eval(data, preds)

    out = run_cli("unpatch", str(tree), env=upstream_env)
    assert out.returncode == 0, out.stderr
    assert snapshot(tree) == before


def _score_with_coco_eval(data: Path, preds: Path) -> None:
    """The package's COCO evaluator reads a YOLOv5/YOLOv7 --save-json file as it is."""
    try:
        from yolo_nonlocal.metrics import coco as coco_eval
    except ImportError:
        pytest.skip("yolo_nonlocal.metrics.coco is not available yet")
    stats = coco_eval.evaluate(str(data), str(preds))
    assert set(stats) >= {"AP", "AP50", "AP75", "APs", "APm", "APl"}
    assert stats == coco_eval.evaluate(str(data), str(preds), category_ids=0)  # auto-detected as 0-based
    assert all(-1.0 <= v <= 1.0 for v in stats.values()) and stats["AP50"] >= stats["AP"]
    # the ground truth written the way val.py writes detections scores a perfect 1.0: same id conventions
    d = yaml.safe_load(data.read_text())
    root = Path(d["path"])
    perfect = []
    for lab in sorted((root / "labels" / "val").glob("*.txt")):
        for line in lab.read_text().split("\n"):
            if line.strip():
                c, x, y, w, h = (float(v) for v in line.split())
                perfect.append({"image_id": lab.stem, "category_id": int(c), "score": 0.9,
                                "bbox": [(x - w / 2) * 128, (y - h / 2) * 128, w * 128, h * 128]})
    assert coco_eval.evaluate(str(data), perfect, category_ids=0)["AP"] == pytest.approx(1.0)
    cli = run_cli("eval", f"data={data}", f"predictions={preds}")
    assert cli.returncode == 0 and "AP50" in cli.stdout, cli.stderr


_V7_HYP = """\
lr0: 0.01
lrf: 0.1
momentum: 0.9
weight_decay: 0.0005
warmup_epochs: 1.0
warmup_momentum: 0.8
warmup_bias_lr: 0.1
box: 0.05
cls: 0.5
cls_pw: 1.0
obj: 1.0
obj_pw: 1.0
iou_t: 0.2
anchor_t: 4.0
fl_gamma: 0.0
hsv_h: 0.0
hsv_s: 0.0
hsv_v: 0.0
degrees: 0.0
translate: 0.0
scale: 0.0
shear: 0.0
perspective: 0.0
flipud: 0.0
fliplr: 0.5
mosaic: 0.0
mixup: 0.0
copy_paste: 0.0
paste_in: 0.0
loss_ota: 0
"""

YOLOV7_TINY_STOCK_PARAMS_NC80 = 6228762  # stock cfg/training/yolov7-tiny.yaml, nc=80 (the 6.2M of the paper)


@pytest.mark.slow
def test_real_yolov7_tree(tmp_path, upstream_env, tiny_dataset):
    tree = _unprefix(_upstream(*YOLOV7), "yolov7", tmp_path / "yolov7")
    before, dirs = snapshot(tree), tree_dirs(tree)
    out = run_cli("patch", str(tree), env=upstream_env)
    assert out.returncode == 0, out.stderr
    assert "patched as yolov7" in out.stdout

    data_dir = _copy_dataset(tiny_dataset, tmp_path / "data")
    data = tmp_path / "data7.yaml"  # YOLOv7 reads absolute train/val folders, nc and a names list
    data.write_text(yaml.safe_dump({"train": str(data_dir / "images" / "train"), "val": str(data_dir / "images" / "val"),
                                    "nc": 2, "names": ["red", "blue"]}))
    hyp = tmp_path / "hyp.yaml"
    hyp.write_text(_V7_HYP)
    runs = tmp_path / "runs"
    _run(["train.py", "--data", str(data), "--cfg", "cfg/training/yolov7-tiny-nl.yaml", "--weights", "", "--hyp",
          str(hyp), "--img-size", "64", "64", "--batch-size", "4", "--epochs", "1", "--device", "cpu", "--workers",
          "0", "--project", str(runs), "--name", "train", "--noautoanchor"], tree, upstream_env, timeout=600)
    best = runs / "train" / "weights" / "best.pt"
    assert best.is_file()

    # build through the tree's Model, forward + backward, the stock graph around the blocks, and the tree's own
    # attempt_load (given a single path: the yolov7detect sdist's loader mishandles lists)
    code = (f"CFGS = [('cfg/training/yolov7-tiny-nl.yaml', None)]\nLOAD = ({str(best)!r}, 'cpu')\n"
            "COUNT80 = 'cfg/training/yolov7-tiny-nl.yaml'\nimport torch\n" + _BUILD_REAL)
    res = json.loads(_py(code, tree, upstream_env).splitlines()[-1])
    t = res["cfg/training/yolov7-tiny-nl.yaml"]
    assert [b[:2] for b in t["blocks"]] == [[256, False], [64, True]]
    assert {b[2] for b in t["blocks"]} == {"yolo_nonlocal.nonlocal_block"}
    assert t["init"] == [[[0.3], True]] * 2  # the copied YAML's nonlocal_init_* keys reached the blocks
    assert t["grad"] and t["shapes"] == [[2, 3, 8, 8, 7], [2, 3, 4, 4, 7], [2, 3, 2, 2, 7]]
    assert res["count80"] == YOLOV7_TINY_STOCK_PARAMS_NC80  # the stock graph around the two blocks
    assert res["loaded"][:2] == [2, "yolo_nonlocal.nonlocal_block"]

    out = run_cli("unpatch", str(tree), env=upstream_env)
    assert out.returncode == 0, out.stderr
    assert snapshot(tree) == before and tree_dirs(tree) == dirs  # cfg/training, created by the patch, is gone
