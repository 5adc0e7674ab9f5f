"""The integration on the oldest Ultralytics releases it claims: 8.3.0 (YOLOv8, YOLO11) and 8.4.0 (YOLO26).

The old releases are installed beside the environment's own Ultralytics, without dependencies, by the
Makefile's install-test step (`pip install --no-deps --target .venv/ultralytics-oldest ultralytics==8.3.0 tqdm
py-cpuinfo` and `... --target .venv/ultralytics-8.4.0 ultralytics==8.4.0`), and each check runs in a new
process with that folder first on PYTHONPATH, so the start-up hook, YAML lookup, channel filling,
pretrained remap and GFLOPs are exercised against that release's own parse_model and loaders.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

RELEASES = {
    "8.3.0": ("ultralytics-oldest", ["yolov8n-nl.yaml", "yolo11n-nl.yaml", "yolov8n-nl-p2.yaml", "yolo11n-nl-p2.yaml"],
              "yolo11n"),
    "8.4.0": ("ultralytics-8.4.0", ["yolo26n-nl.yaml", "yolo26n-nl-p2.yaml"], "yolo26n"),
}

SCRIPT = """
import copy, sys, torch
import ultralytics
assert ultralytics.__version__ == {version!r}, ultralytics.__version__
assert ultralytics.__file__.startswith({target!r}), ultralytics.__file__
import ultralytics.nn.tasks as tasks
from ultralytics.nn.tasks import DetectionModel
from ultralytics.utils.torch_utils import get_flops
from yolo_nonlocal.nonlocal_block import NonLocal
from yolo_nonlocal.integrations.ultralytics.flops import attention_gflops
assert tasks.NonLocal is NonLocal  # registered by the start-up hook, nothing imported by hand
for name in {yamls!r}:
    m = DetectionModel(name, verbose=False).eval()
    assert sum(isinstance(b, NonLocal) for b in m.modules()) == 2, name
    with torch.no_grad():
        out = m(torch.rand(1, 3, 64, 64))
    assert torch.isfinite(out[0] if isinstance(out, (list, tuple)) else out).all(), name
# pretrained transfer: every stock tensor lands and the output is unchanged
torch.manual_seed(0)
stock = DetectionModel({stock!r} + ".yaml", verbose=False).eval()
nl_dict = copy.deepcopy(tasks.yaml_model_load({stock!r} + "-nl.yaml"))
nl_dict["nonlocal_init_gamma"] = 0.0  # the shipped YAMLs switch the blocks on; 0 is the identity checked here
nl = DetectionModel(nl_dict, verbose=False)
nl.load(stock)
nl.eval()
x = torch.rand(1, 3, 64, 64)
with torch.no_grad():
    a, b = stock(x), nl(x)
a, b = (a[0], b[0]) if isinstance(a, (list, tuple)) else (a, b)
torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-4)
sd = nl.state_dict()
assert all(any(torch.equal(v.float(), w) for w in [sd[k2] for k2 in sd if k2.split(".")[2:] == k.split(".")[2:]])
           for k, v in stock.state_dict().items() if v.is_floating_point())
# GFLOPs include the attention
extra = get_flops(nl, 640) - get_flops(stock, 640)
att = attention_gflops(nl, 640)
assert att > 1 and att < extra < att + 1, (att, extra)  # shipped: P5 block 0.08 + sub-sampled P3 block 1.31
# a bad row is named
d = tasks.yaml_model_load({stock!r} + "-nl.yaml")
d["head"][-1 - 7][3] = [2, "softmax"]
try:
    DetectionModel(d, verbose=False)
except ValueError as e:
    assert "NonLocal row" in str(e) and "softmax" in str(e), e
else:
    raise AssertionError("bad row accepted")
# block options: gamma at build, the lr multiplier's param groups in this release's build_optimizer
import copy, importlib, math, time, types
from ultralytics.engine.trainer import BaseTrainer
d = copy.deepcopy(tasks.yaml_model_load({stock!r} + "-nl.yaml"))
d.update(nonlocal_init_gamma=0.5, nonlocal_lr_mult=4)
m = DetectionModel(d, verbose=False)
blocks = [b for b in m.modules() if isinstance(b, NonLocal)]
assert all(float(b.w_z[1].weight.detach().min()) == 0.5 for b in blocks)
fake = types.SimpleNamespace(args=types.SimpleNamespace(lr0=0.01, warmup_bias_lr=0.1, optimizer="SGD"), data={{"nc": 80}})
opt = BaseTrainer.build_optimizer(fake, m, name="SGD", lr=0.01, momentum=0.9, decay=1e-5)
mine = [g for g in opt.param_groups if "nonlocal_lr_mult" in g]
assert {{id(p) for g in mine for p in g["params"]}} == {{id(p) for b in blocks for p in b.parameters()}}
assert all(abs(g["lr"] - 0.04) < 1e-12 for g in mine) and len(opt.param_groups) == 6
# results.csv of a resumed run follows its (padded, on 8.3) header
csv_path = __import__("pathlib").Path("results.csv")
t = types.SimpleNamespace(csv=csv_path, epoch=0, train_time_start=time.time(),
                          validator=types.SimpleNamespace(args=types.SimpleNamespace(task="detect")))
BaseTrainer.save_metrics.__wrapped__(t, {{"train/box_loss": 1.5, "val/box_loss": 1.25}})
t.epoch = 1
BaseTrainer.save_metrics(t, {{"train/box_loss": 1.5, "coco/AP": 0.5, "val/box_loss": 1.25}})
lines = [l.split(",") for l in csv_path.read_text().splitlines()]
assert [len(l) for l in lines] == [len(lines[0])] * 3 and [c.strip() for c in lines[0]][-6] == "coco/AP", lines
assert float(lines[2][lines[0].index(next(c for c in lines[0] if c.strip() == "val/box_loss"))]) == 1.25, lines
# every patch survives a reload, and unregister / register round-trip
import yolo_nonlocal
importlib.reload(tasks)
assert sum(isinstance(b, NonLocal) for b in tasks.DetectionModel({stock!r} + "-nl.yaml", verbose=False).modules()) == 2
yolo_nonlocal.unregister()
assert "NonLocal" not in vars(tasks) and not hasattr(tasks.parse_model, "__yolo_nonlocal_patch__")
yolo_nonlocal.register()
assert tasks.DetectionModel({stock!r} + "-nl.yaml", verbose=False) is not None
# a YOLO26 YAML on a release without YOLO26 modules says which release it needs
if {version!r} == "8.3.0":
    from yolo_nonlocal.integrations.ultralytics.registration import UnsupportedUltralyticsError
    try:
        DetectionModel("yolo26n-nl.yaml", verbose=False)
    except UnsupportedUltralyticsError as e:
        assert "YOLO26 YAML (end2end: true), whose modules need ultralytics>=8.4.0" in str(e), e
    else:
        raise AssertionError("yolo26n-nl.yaml built on 8.3.0")
print("OK", ultralytics.__version__)
"""


@pytest.mark.slow
@pytest.mark.parametrize("version", list(RELEASES))
def test_oldest_supported_release(version, tmp_path):
    folder, yamls, stock = RELEASES[version]
    target = Path(sys.prefix) / folder
    if not (target / "ultralytics" / "__init__.py").exists():
        pytest.skip(
            f"Ultralytics {version} is not installed at {target}; run: {sys.executable} -m pip install --no-deps "
            f"--target {target} ultralytics=={version}" + (" tqdm py-cpuinfo" if version == "8.3.0" else "")
        )
    env = dict(os.environ)
    env["PYTHONPATH"] = str(target)
    env["YOLO_CONFIG_DIR"] = str(tmp_path / "config")  # settings files differ between releases
    code = textwrap.dedent(SCRIPT).format(version=version, target=str(target), yamls=yamls, stock=stock)
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                       timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert r.stdout.strip().splitlines()[-1] == f"OK {version}"
