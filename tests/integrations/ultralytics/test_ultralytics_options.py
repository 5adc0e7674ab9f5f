"""Block options from the model YAML (issue 10 item 3): ``nonlocal_init_gamma`` and ``nonlocal_lr_mult``.

Checked against the real installed Ultralytics: the built model's gammas, bit-identical predictions of a stock
checkpoint at gamma 0, loaded weights winning over the option, bad values refused with the key named, and
the optimizer's param groups (and their learning rates through warm-up and resume) in a real training.
"""

from __future__ import annotations

import logging
import re
from copy import deepcopy

import pytest
import torch
import yaml

import yolo_nonlocal

yolo_nonlocal.register()

from ultralytics import YOLO  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, yaml_model_load  # noqa: E402

from yolo_nonlocal.integrations.ultralytics import options  # noqa: E402
from yolo_nonlocal.integrations.ultralytics.options import NonLocalOptionError  # noqa: E402
from yolo_nonlocal.nonlocal_block import NonLocal  # noqa: E402
from yolo_nonlocal.utils.model_yamls import find_model_yaml  # noqa: E402


def _yaml(**keys) -> dict:
    """yolov8n-nl's model dict without the shipped options (the keys absent), then ``keys``."""
    d = deepcopy(yaml_model_load("yolov8n-nl.yaml"))
    for key in (options.INIT_GAMMA_KEY, options.LR_MULT_KEY, options.INIT_ATTENTION_KEY):
        d.pop(key, None)
    d.update(keys)
    return d


def _gammas(model) -> list[float]:
    return [float(b.w_z[1].weight.detach().mean()) for b in model.modules() if isinstance(b, NonLocal)]


def _stock_checkpoint(path):
    from ultralytics import __version__

    torch.manual_seed(0)
    stock = DetectionModel("yolov8n.yaml", verbose=False)
    for m in stock.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    torch.save({"model": deepcopy(stock).half(), "ema": None, "train_args": {}, "version": __version__}, path)
    return path


def test_defaults_when_keys_are_absent():
    assert options.read_options({}) == options.BlockOptions(0.0, 1.0)
    model = DetectionModel(_yaml(), verbose=False)
    assert _gammas(model) == [0.0, 0.0]


@pytest.mark.parametrize("name", ["yolov8n-nl.yaml", "yolo11n-nl.yaml", "yolo26n-nl.yaml", "yolov8n-nl-p2.yaml"])
def test_shipped_yamls_state_the_measured_default(name):
    """The shipped -nl YAMLs write the measured default out (README, Results): gamma 0.3, uniform maps."""
    d = yaml_model_load(name)
    assert d[options.INIT_GAMMA_KEY] == 0.3 and d[options.INIT_ATTENTION_KEY] == "uniform"
    assert options.read_options(d) == options.BlockOptions(0.3, 1.0, "uniform")
    model = DetectionModel(deepcopy(d), verbose=False)
    assert _gammas(model) == pytest.approx([0.3, 0.3])
    blocks = [b for b in model.modules() if isinstance(b, NonLocal)]
    assert all(not b.phi.weight.any() for b in blocks)
    assert [b.sub_sample for b in blocks] == [False, True]  # the P3 row's keys sub-sampled (issue 12), P5 full
    text = find_model_yaml(re.sub(r"(\d+)[nslmx]-", r"\1-", name, count=1)).read_text()  # the file, scale-less
    assert "9 of 12 seeds" in text and "nonlocal_init_gamma: 0.0" in text  # the figures, and how to get the identity
    assert "sub-samples its keys" in text and "full-resolution" in text  # and how to get the P3 row at full size


@pytest.mark.parametrize("family", ["yolov8", "yolo11", "yolo26"])
def test_full_resolution_yamls_differ_from_the_shipped_ones_in_the_p3_row_only(family):
    shipped, full = (dict(yaml_model_load(f"{family}n-{s}.yaml")) for s in ("nl", "nl-full"))
    rows = {k: d.pop("backbone") + d.pop("head") for k, d in (("shipped", shipped), ("full", full))}
    assert {k: v for k, v in shipped.items() if k != "yaml_file"} == {k: v for k, v in full.items() if k != "yaml_file"}
    changed = [i for i, (a, b) in enumerate(zip(rows["shipped"], rows["full"])) if a != b]
    assert len(rows["shipped"]) == len(rows["full"]) and len(changed) == 1
    i = changed[0]
    assert rows["shipped"][i][2] == "NonLocal" and rows["shipped"][i][3] == [2, "embedded_gaussian", True]
    assert rows["full"][i][3] == [2, "embedded_gaussian", False]
    model = DetectionModel(f"{family}n-nl-full.yaml", verbose=False)
    assert [b.sub_sample for b in model.modules() if isinstance(b, NonLocal)] == [False, False]


def test_init_attention_key_builds_uniform_maps_and_survives_a_stock_checkpoint_load(tmp_path):
    assert options.read_options({}).init_attention == "random"
    model = DetectionModel(_yaml(nonlocal_init_gamma=0.3, nonlocal_init_attention="uniform"), verbose=False)
    blocks = [b for b in model.modules() if isinstance(b, NonLocal)]
    assert len(blocks) == 2 and all(b.init_attention == "uniform" and not b.phi.weight.any() for b in blocks)
    assert _gammas(model) == pytest.approx([0.3, 0.3])
    model.load(torch.load(_stock_checkpoint(tmp_path / "yolov8n.pt"), weights_only=False))
    assert all(not b.phi.weight.any() for b in blocks)  # the blocks are not in a stock checkpoint
    random_ = [b for b in DetectionModel(_yaml(), verbose=False).modules() if isinstance(b, NonLocal)]
    assert all(b.phi.weight.any() and b.init_attention == "random" for b in random_)
    with pytest.raises(NonLocalOptionError, match="'nonlocal_init_attention' must be one of random, uniform, got 'flat'"):
        DetectionModel(_yaml(nonlocal_init_attention="flat"), verbose=False)
    d = _yaml(nonlocal_init_attention="uniform")
    d["head"][6] = [-1, 1, "NonLocal", [2, "dot_product"]]  # row 17: no softmax to make uniform, left random
    p5, p3 = [b for b in DetectionModel(d, verbose=False).modules() if isinstance(b, NonLocal)]
    assert not p5.phi.weight.any() and p5.init_attention == "uniform"
    assert p3.phi.weight.any() and p3.init_attention == "random" and p3.mode == "dot_product"


def test_configure_sets_init_attention_on_a_built_model():
    model = YOLO("yolov8n-nl.yaml")
    options.configure(model, init_attention="uniform")
    assert model.model.yaml[options.INIT_ATTENTION_KEY] == "uniform"
    assert all(not b.phi.weight.any() for b in model.model.modules() if isinstance(b, NonLocal))
    options.configure(model, init_attention="random")  # back to a random phi
    assert all(b.phi.weight.any() for b in model.model.modules() if isinstance(b, NonLocal))
    with pytest.raises(NonLocalOptionError, match="nonlocal_init_attention"):
        options.configure({}, init_attention="none")


def test_init_gamma_is_in_the_built_model_and_its_yaml():
    model = DetectionModel(_yaml(nonlocal_init_gamma=0.5), verbose=False)
    blocks = [b for b in model.modules() if isinstance(b, NonLocal)]
    assert len(blocks) == 2
    for b in blocks:
        assert torch.all(b.w_z[1].weight == 0.5) and torch.all(b.w_z[1].bias == 0)
        assert b.init_gamma == 0.5  # reset_parameters() keeps the option
        assert "init_gamma=0.5" in repr(b)
    assert model.yaml["nonlocal_init_gamma"] == 0.5


def test_gamma_zero_keeps_a_stock_checkpoint_identical_and_gamma_one_survives_the_load(tmp_path):
    path = _stock_checkpoint(tmp_path / "yolov8n.pt")
    src = YOLO(str(path)).model.float().eval()
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        ref = src(x)[0]
    for gamma in (0.0, 1.0):
        nl = DetectionModel(_yaml(nonlocal_init_gamma=gamma), verbose=False)
        nl.load(torch.load(path, weights_only=False))
        assert _gammas(nl) == [gamma, gamma]  # the blocks are not in the checkpoint: they keep the option
        with torch.no_grad():
            out = nl.eval()(x)[0]
        if gamma == 0.0:
            assert torch.equal(out, ref), f"max difference {(out - ref).abs().max().item():.3g}"
        else:
            assert not torch.allclose(out, ref)  # switched-on blocks change the predictions


def test_trained_block_weights_win_over_the_option(tmp_path):
    """Resume / val / predict of a trained model: its blocks are loaded, never reset to init_gamma."""
    from ultralytics import __version__

    trained = DetectionModel(_yaml(nonlocal_init_gamma=1.0), verbose=False)
    for b in trained.modules():
        if isinstance(b, NonLocal):
            b.w_z[1].weight.data.fill_(0.37)
    path = tmp_path / "nl.pt"
    torch.save({"model": deepcopy(trained).half(), "ema": None, "train_args": {}, "version": __version__}, path)
    assert YOLO(str(path)).model.yaml["nonlocal_init_gamma"] == 1.0  # the key survives in the checkpoint
    assert _gammas(YOLO(str(path)).model) == pytest.approx([0.37, 0.37], abs=1e-3)
    # the trainer's path: the model is rebuilt from the checkpoint's yaml (gamma 1), then its weights land
    ckpt = torch.load(path, weights_only=False)
    rebuilt = DetectionModel(deepcopy(ckpt["model"].yaml), verbose=False)
    assert _gammas(rebuilt) == [1.0, 1.0]
    rebuilt.load(ckpt)
    assert _gammas(rebuilt) == pytest.approx([0.37, 0.37], abs=1e-3)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        ("nonlocal_init_gamma", "big", "a finite number"),
        ("nonlocal_init_gamma", float("nan"), "a finite number"),
        ("nonlocal_init_gamma", True, "a finite number"),
        ("nonlocal_init_gamma", [1.0], "a finite number"),
        ("nonlocal_lr_mult", 0, "a positive number"),
        ("nonlocal_lr_mult", -5, "a positive number"),
        ("nonlocal_lr_mult", "fast", "a positive number"),
        ("nonlocal_lr_mult", float("inf"), "a positive number"),
    ],
)
def test_bad_values_are_refused_naming_the_key(key, value, fragment):
    with pytest.raises(NonLocalOptionError, match=rf"{key}.*{fragment}"):
        DetectionModel(_yaml(**{key: value}), verbose=False)
    with pytest.raises(NonLocalOptionError, match=key):
        options.configure(_yaml(), **{key.replace("nonlocal_", ""): value})


def test_numeric_strings_are_read_as_numbers():
    assert options.read_options({"nonlocal_init_gamma": "0.25", "nonlocal_lr_mult": "5"}) == options.BlockOptions(0.25, 5.0)


def test_configure_a_yolo_object_and_refuse_to_reset_trained_blocks():
    model = YOLO("yolov8n-nl.yaml")
    assert options.configure(model, init_gamma=1.0, lr_mult=5) is model
    assert model.model.yaml["nonlocal_init_gamma"] == 1.0 and model.model.yaml["nonlocal_lr_mult"] == 5.0
    assert _gammas(model.model) == [1.0, 1.0]
    next(b for b in model.model.modules() if isinstance(b, NonLocal)).w_z[1].weight.data[0] = 0.3  # "trained"
    with pytest.raises(NonLocalOptionError, match="trained weights"):
        options.configure(model, init_gamma=0.0)
    options.configure(model, init_gamma=0.0, force=True)
    assert _gammas(model.model) == [0.0, 0.0]
    d = options.configure(_yaml(), init_gamma=2)
    assert d["nonlocal_init_gamma"] == 2.0 and "nonlocal_init_gamma" not in _yaml()


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


class _Stop(Exception):
    pass


def test_param_groups_in_a_real_training_and_resume(tiny_dataset, tmp_path):
    """1 real epoch of yolo train: block params in their own groups at 5x lr through warm-up; resume keeps them."""
    cfg = _yaml(nonlocal_init_gamma=1.0, nonlocal_lr_mult=5)
    (tmp_path / "yolov8n-nl.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    seen, after, start = [], [], []

    def block_state(model):
        return [[q.detach().clone() for q in b.parameters()] for b in model.modules() if isinstance(b, NonLocal)]

    def snapshot(trainer):
        seen.append([{k: v for k, v in g.items() if k != "params"} | {"n": len(g["params"]),
                     "ids": {id(p) for p in g["params"]}} for g in trainer.optimizer.param_groups])
        blocks = [b for b in trainer.model.modules() if isinstance(b, NonLocal)]
        seen[-1].append({id(p) for b in blocks for p in b.parameters()})
        after.append(block_state(trainer.model))

    def stop_after_first_epoch(trainer):
        if trainer.epoch == 0:
            raise _Stop

    from ultralytics.utils import LOGGER

    records = _Records()
    LOGGER.addHandler(records)
    model = YOLO(str(tmp_path / "yolov8n-nl.yaml"))
    model.add_callback("on_train_start", lambda trainer: start.append((_gammas(trainer.model), block_state(trainer.model))))
    model.add_callback("on_train_epoch_end", snapshot)
    model.add_callback("on_fit_epoch_end", stop_after_first_epoch)
    common = dict(data=str(tiny_dataset), imgsz=64, batch=4, workers=0, device="cpu", plots=False, optimizer="SGD",
                  lr0=0.01, warmup_bias_lr=0.1, nbs=4, amp=False, project=str(tmp_path), exist_ok=True, verbose=False)
    try:
        with pytest.raises(_Stop):
            model.train(epochs=2, name="run", **common)
    finally:
        LOGGER.removeHandler(records)
    groups = seen[0][:-1]
    block_ids = seen[0][-1]
    stock = [g for g in groups if "nonlocal_lr_mult" not in g]
    mine = [g for g in groups if "nonlocal_lr_mult" in g]
    assert len(stock) == 3 and len(mine) == 3  # weight, bn-weight and bias parts of the blocks
    assert set().union(*(g["ids"] for g in mine)) == block_ids  # every block parameter, and only those
    assert not any(g["ids"] & block_ids for g in stock)
    for g in mine:
        parent = next(s for s in stock if s.get("weight_decay") == g["weight_decay"] and s.get("param_group") ==
                      g.get("param_group") and s.get("initial_lr") * 5 == pytest.approx(g["initial_lr"]))
        assert g["initial_lr"] == pytest.approx(0.05)
        if g.get("param_group", "") != "bias" and parent["lr"] > 0:  # warm-up ramps both groups to initial_lr*lf
            assert g["lr"] == pytest.approx(5 * parent["lr"])
    assert any("block lr = 0.05" in line and "nonlocal_init_gamma=1" in line for line in records.lines), records.lines

    last = tmp_path / "run" / "weights" / "last.pt"
    ckpt = torch.load(last, weights_only=False)
    saved = ckpt.get("model") or ckpt["ema"]  # recent releases keep only the EMA
    assert saved.yaml["nonlocal_lr_mult"] == 5 and len(ckpt["optimizer"]["param_groups"]) == 6
    assert start[0][0] == [1.0, 1.0]  # both blocks started switched on
    # every block learned during the epoch (on gamma itself the few warm-up steps' update can round away)
    assert all(any(not torch.equal(a, b) for a, b in zip(s0, s1)) for s0, s1 in zip(start[0][1], after[0]))
    seen.clear()
    resumed = YOLO(str(last))
    resumed.add_callback("on_train_epoch_end", snapshot)
    resumed.train(resume=True)
    assert len(seen) == 1 and sum("nonlocal_lr_mult" in g for g in seen[0][:-1]) == 3


def test_options_apply_to_every_block_family():
    """init_gamma and the lr multiplier reach the sibling blocks of the table too (ContextBlock, LocalBlock)."""
    from types import SimpleNamespace

    from ultralytics.engine.trainer import BaseTrainer

    context = pytest.importorskip("yolo_nonlocal.context_block")
    d = _yaml(nonlocal_init_gamma=0.5, nonlocal_lr_mult=3)
    rows = d["backbone"] + d["head"]
    rows[17] = [-1, 1, "ContextBlock", []]
    d["backbone"], d["head"] = rows[:11], rows[11:]
    model = DetectionModel(d, verbose=False)
    gc = model.model[17]
    assert isinstance(gc, context.ContextBlock) and gc.init_gamma == 0.5
    assert gc.transform_add[-1].weight.abs().sum() > 0  # switched on: the zero-init output layer was redrawn
    fake = SimpleNamespace(args=SimpleNamespace(lr0=0.01, warmup_bias_lr=0.1, optimizer="SGD"), data={"nc": 80})
    opt = BaseTrainer.build_optimizer(fake, model, name="SGD", lr=0.01, momentum=0.9, decay=1e-5)
    block_ids = {id(p) for b in options.block_modules(model) for p in b.parameters()}
    mine = [g for g in opt.param_groups if "nonlocal_lr_mult" in g]
    assert {id(p) for g in mine for p in g["params"]} == block_ids and {id(p) for p in gc.parameters()} <= block_ids
    assert all(g["lr"] == pytest.approx(0.03) and g["initial_lr"] == pytest.approx(0.03) for g in mine)
    assert all(g["lr"] == pytest.approx(0.01) for g in opt.param_groups if "nonlocal_lr_mult" not in g)


@pytest.mark.slow
def test_stock_yolo_command_reads_the_keys_and_pretrained_keeps_init_gamma(tiny_dataset, tmp_path):
    """`yolo train model=<yaml with the keys> pretrained=<stock .pt>`: the real console script, a fresh process."""
    import os
    import subprocess
    import sys
    from pathlib import Path

    cfg = _yaml(nonlocal_init_gamma=0.75, nonlocal_lr_mult=4)
    (tmp_path / "yolov8n-nl.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    stock = _stock_checkpoint(tmp_path / "yolov8n.pt")
    yolo = Path(sys.executable).parent / "yolo"
    env = {**os.environ, "YOLO_NONLOCAL_CACHE_DIR": str(tmp_path / "gt-cache")}
    env.pop("PYTHONPATH", None)
    proc = subprocess.run(
        [str(yolo), "train", f"model={tmp_path / 'yolov8n-nl.yaml'}", f"pretrained={stock}", f"data={tiny_dataset}",
         "epochs=1", "imgsz=64", "batch=4", "workers=0", "device=cpu", "plots=False", "amp=False", "optimizer=SGD",
         "lr0=0.01", f"project={tmp_path}", "name=cli"],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    line = next(x for x in out.splitlines() if "yolo-nonlocal: 2 block(s)" in x)
    # the stock checkpoint has no blocks: after its weights landed the blocks still start at the YAML's gamma
    assert "block lr = 0.04" in line and "nonlocal_init_gamma=0.75 (mean gamma now 0.75)" in line, line
    assert "checkpoint tensors landed" in out
    best = torch.load(tmp_path / "cli" / "weights" / "last.pt", weights_only=False)
    saved = best.get("model") or best["ema"]
    assert saved.yaml["nonlocal_init_gamma"] == 0.75 and saved.yaml["nonlocal_lr_mult"] == 4
