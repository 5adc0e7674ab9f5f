"""The shipped -nl YAMLs inside Ultralytics: every scale builds, rows are checked, pretrained weights land,
summaries count the attention, and a block whose logits blow up under reduced precision is caught.
"""

from __future__ import annotations

import logging
import re
from copy import deepcopy
from pathlib import Path

import pytest
import torch

import yolo_nonlocal

yolo_nonlocal.register()  # explicit: this process may have imported Ultralytics before the hook existed

import ultralytics.nn.tasks as tasks  # noqa: E402
from ultralytics import YOLO  # noqa: E402
from ultralytics.nn.tasks import DetectionModel, yaml_model_load  # noqa: E402
from ultralytics.utils import torch_utils  # noqa: E402

from yolo_nonlocal.integrations.ultralytics import checkpoints, rows  # noqa: E402
from yolo_nonlocal.integrations.ultralytics import registration as ui  # noqa: E402
from yolo_nonlocal.nonlocal_block import NonLocal  # noqa: E402
from yolo_nonlocal.integrations.ultralytics.flops import _hidden_attention, attention_gflops  # noqa: E402

FAMILIES = ["yolov8-nl", "yolo11-nl", "yolo26-nl", "yolov8-nl-p2", "yolo11-nl-p2", "yolo26-nl-p2"]
STOCK = {"yolov8-nl": "yolov8", "yolo11-nl": "yolo11", "yolo26-nl": "yolo26", "yolov8-nl-p2": "yolov8-p2",
         "yolo26-nl-p2": "yolo26-p2"}  # Ultralytics ships no YOLO11-P2


def scaled(family: str, scale: str) -> str:
    return family.replace("-nl", f"{scale}-nl", 1) + ".yaml"


def _route(seq, x):
    """Run a parse_model Sequential like BaseModel._predict_once; return the Detect inputs' shapes."""
    y, head_in = [], None
    for m in seq:
        if m.f != -1:
            x = y[m.f] if isinstance(m.f, int) else [x if j == -1 else y[j] for j in m.f]
        if m is seq[-1]:
            head_in = [tuple(t.shape) for t in x]
        x = m(x)
        y.append(x)
    return head_in


def _build_meta(yaml_name: str):
    d = tasks.yaml_model_load(yaml_name)
    with torch.device("meta"):
        seq, _ = tasks.parse_model(deepcopy(d), ch=3, verbose=False)
        head_in = _route(seq, torch.zeros(1, 3, 640, 640))
    return seq, head_in


def test_yaml_files_are_shipped_and_resolve_from_any_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    folder = ui.model_yaml_dir()
    assert {p.name for p in folder.glob("*.yaml")} >= {f + ".yaml" for f in FAMILIES}
    for family in FAMILIES:
        d = tasks.yaml_model_load(scaled(family, "s"))
        assert Path(tasks.check_yaml(family + ".yaml")) == folder / (family + ".yaml")
        assert d["scale"] == "s" and any(r[2] == "NonLocal" for r in d["backbone"] + d["head"])
    assert ui.find_model_yaml("sub/yolov8-nl.yaml") is None  # only bare names, only the top level
    with pytest.raises(FileNotFoundError):
        tasks.yaml_model_load("yolov8n-nl-nonexistent.yaml")


@pytest.mark.parametrize("family", FAMILIES)
def test_every_scale_builds_and_runs(family):
    """n/s/m/l/x: channels filled in per scale, the shapes reaching the head equal the stock model's."""
    for scale in "nsmlx":
        seq, head_in = _build_meta(scaled(family, scale))
        blocks = [(i, m) for i, m in enumerate(seq) if isinstance(m, NonLocal)]
        assert len(blocks) == 2
        for i, m in blocks:  # a block gets the channels of the layer it refines, and gives them back
            assert m.c1 == m.w_z[1].num_features
        if family in STOCK and scale == "m":  # m: the scale whose max_channels clamps the widths
            stem = STOCK[family]
            _, stock_in = _build_meta(stem.replace("-p2", "") + scale + stem[len(stem.replace("-p2", "")):] + ".yaml")
            assert head_in == stock_in, (family, scale)
        assert len(head_in) == (4 if family.endswith("p2") else 3)
    # and a real forward pass of the nano model, on real numbers
    model = DetectionModel(scaled(family, "n"), verbose=False).eval()
    with torch.no_grad():
        out = model(torch.rand(1, 3, 64, 64))
    pred = out[0] if isinstance(out, (list, tuple)) else out
    assert torch.isfinite(pred).all()


def test_probe_path_gives_the_same_channels(monkeypatch):
    """The version-independent BatchNorm2d probe and the fast path fill in the same input channels."""
    fast = [m.c1 for m in _build_meta("yolo11x-nl-p2.yaml")[0] if isinstance(m, NonLocal)]
    monkeypatch.setattr(rows, "_FORCE_PROBE", True)
    probed = [m.c1 for m in _build_meta("yolo11x-nl-p2.yaml")[0] if isinstance(m, NonLocal)]
    assert fast == probed == [768, 384]


def _with_row(index: int, row: list) -> dict:
    d = tasks.yaml_model_load("yolov8n-nl.yaml")
    rows = d["backbone"] + d["head"]
    rows[index] = row
    d["backbone"], d["head"] = rows[: len(d["backbone"])], rows[len(d["backbone"]) :]
    return d


@pytest.mark.parametrize(
    "index, row, message",
    [
        (10, [6, 1, "NonLocal", []], r"NonLocal row 10 \(backbone\): \[6, 1, 'NonLocal', \[\]\]: 'from' must be -1"),
        (17, [-1, 1, "NonLocal", [2, "softmax"]], r"NonLocal row 17 \(head\).*unknown mode .*'softmax'.*embedded_gaussian"),
        (17, [-1, 1, "NonLocal", [0]], r"row 17 \(head\).*reduction \(args\[0\]\) must be a positive int"),
        (17, [-1, 1, "NonLocal", [2, "gaussian", "yes"]], r"row 17 \(head\).*sub_sample \(args\[2\]\) must be true or false"),
        (17, [-1, 1, "NonLocal", [2, "gaussian", False, 3]], r"row 17 \(head\).*at most 3 args.*filled in automatically"),
        (0, [-1, 1, "NonLocal", []], r"row 0 \(backbone\).*cannot be the first layer"),
        # issue 11 item 3: a zoo-style channel count that is not this row's channels is refused, saying how to write it
        (17, [-1, 1, "NonLocal", [128]], r"row 17 \(head\).*args\[0\]=128 is not a plausible reduction.*nor this row's "
                                          r"channel count \(64 at this scale\).*Write \[-1, 1, NonLocal, \[reduction, mode, "
                                          r"sub_sample\]\].*\[-1, 1, NonLocal, \[\]\]"),
        (17, [-1, 1, "NonLocal", ["2", "gaussian", "maybe"]], r"sub_sample \(args\[2\]\) must be true or false, got 'maybe'"),
    ],
    ids=["from", "mode", "reduction", "sub_sample", "too-many-args", "first-row", "zoo-channels-mismatch",
         "quoted-bad-bool"],
)
def test_bad_rows_raise_errors_that_name_the_row(index, row, message):
    with pytest.raises(ui.NonLocalRowError, match=message):
        DetectionModel(_with_row(index, row), verbose=False)


def test_reduction_too_large_for_the_channels_names_the_row():
    d = {"nc": 2, "backbone": [[-1, 1, "Conv", [8, 3, 2]], [-1, 1, "NonLocal", [16]]],
         "head": [[[1], 1, "Detect", ["nc"]]]}
    with pytest.raises(ui.NonLocalRowError, match=r"NonLocal row 1 \(backbone\).*cannot be built with its 8 input "
                                                   r"channels.*reduction=16 leaves 0 bottleneck channels"):
        DetectionModel(d, verbose=False)


@pytest.mark.parametrize(
    "yaml_name, index, args, c1, inter",
    [
        ("yolov8n-nl.yaml", 17, [64, 2, "gaussian", False], 64, 32),  # channels first, equal to the input channels
        ("yolov8n-nl.yaml", 17, [256], 64, 32),  # the unscaled count, as the C2f row before it writes it
        ("yolov8n-nl.yaml", 10, [1024], 256, 128),
        ("yolov8l-nl.yaml", 10, [512], 512, 256),  # issue 11 item 3: read as reduction 512 (1 channel) before
    ],
)
def test_zoo_style_channel_argument_is_read_as_the_channels(yaml_name, index, args, c1, inter):
    d = tasks.yaml_model_load(yaml_name)
    rows_ = d["backbone"] + d["head"]
    rows_[index] = [-1, 1, "NonLocal", args]
    d["backbone"], d["head"] = rows_[: len(d["backbone"])], rows_[len(d["backbone"]) :]
    with torch.device("meta"):
        seq, _ = tasks.parse_model(deepcopy(d), ch=3, verbose=False)
    assert (seq[index].c1, seq[index].inter_channels) == (c1, inter)
    assert tasks.parse_model(deepcopy(d), ch=3, verbose=False) is not None  # and it builds for real
    assert (d["backbone"] + d["head"])[index][3] == args  # the row stays as written


def test_quoted_values_are_read_as_ultralytics_reads_them():
    """issue 11 item 6: '2' / 'True' in a row are accepted, as Ultralytics' own rows accept them."""
    model = DetectionModel(_with_row(17, [-1, 1, "NonLocal", ["4", "dot_product", "True"]]), verbose=False)
    block = model.model[17]
    assert (block.inter_channels, block.mode, block.sub_sample) == (16, "dot_product", True)


@pytest.mark.parametrize(
    "name, message",
    [
        ("Nonlocal", r"row 17 \(head\).*no module 'Nonlocal'; did you mean 'NonLocal'"),
        ("NonLocal3d", r"row 17 \(head\).*NonLocal3d is the block for video clips.*write \[-1, 1, NonLocal, \[\]\]"),
        ("NonLoca", r"did you mean 'NonLocal'"),
    ],
)
def test_misspelt_block_names_get_a_did_you_mean(name, message):
    with pytest.raises(KeyError) as info:  # still a KeyError, as Ultralytics raises for unknown modules
        DetectionModel(_with_row(17, [-1, 1, name, []]), verbose=False)
    assert isinstance(info.value, ui.NonLocalRowError)
    import re

    assert re.search(message, str(info.value)), str(info.value)


@pytest.mark.parametrize(
    "module, name, args, check",
    [
        ("yolo_nonlocal.context_block", "ContextBlock", [4, "add_mul", "avg"],
         lambda b: (b.c1, b.hidden, b.fusion, b.pooling) == (64, 16, "add_mul", "avg")),
        ("yolo_nonlocal.local_block", "LocalBlock", [2, "embedded_gaussian", None, 5],
         lambda b: (b.c1, b.kernel_size) == (64, 5)),
    ],
)
def test_sibling_blocks_are_registered_from_the_table(module, name, args, check):
    """The block table registers GCNet's ContextBlock and the local control by name, with the same row
    handling (channels filled in, rows checked, init gamma and weights remapping) as NonLocal."""
    cls = getattr(pytest.importorskip(module), name, None)
    if cls is None:
        pytest.skip(f"{module} has no {name} yet")
    assert getattr(tasks, name) is cls
    model = DetectionModel(_with_row(17, [-1, 1, name, args]), verbose=False)
    assert isinstance(model.model[17], cls) and check(model.model[17])
    with pytest.raises(ui.NonLocalRowError, match=rf"{name} row 17 \(head\).*args\[1\]"):
        DetectionModel(_with_row(17, [-1, 1, name, [2, "nonsense"]]), verbose=False)


def test_row_args_reach_the_block_and_yaml_stays_as_written():
    d = _with_row(17, [-1, 1, "NonLocal", [4, "dot_product", True]])
    model = DetectionModel(d, verbose=False)
    block = model.model[17]
    assert (block.c1, block.inter_channels, block.mode, block.sub_sample) == (64, 16, "dot_product", True)
    assert model.yaml["head"][6] == [-1, 1, "NonLocal", [4, "dot_product", True]]  # no channels baked in


# ------------------------------------------------------------------------------------------ pretrained
@pytest.fixture(scope="module")
def stock_checkpoints(tmp_path_factory):
    """Stock nano checkpoints in Ultralytics' format, made locally (no download)."""
    from ultralytics import __version__

    root = tmp_path_factory.mktemp("stock")
    out = {}
    for name in ("yolov8n", "yolo11n", "yolo26n"):
        torch.manual_seed(0)
        model = DetectionModel(f"{name}.yaml", verbose=False)
        for m in model.modules():  # non-trivial BN statistics, so a dropped tensor would show in the output
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.1, 0.1)
                m.running_var.uniform_(0.5, 1.5)
        path = root / f"{name}.pt"
        torch.save({"model": deepcopy(model).half(), "ema": None, "train_args": {}, "version": __version__}, path)
        out[name] = path
    return out


@pytest.mark.parametrize("stock", ["yolov8n", "yolo11n", "yolo26n"])
def test_pretrained_transfer_is_complete_and_output_identical(stock, stock_checkpoints):
    path = stock_checkpoints[stock]
    src = YOLO(str(path)).model.float().eval()
    from yolo_nonlocal.integrations.ultralytics.options import configure

    # the shipped YAMLs switch the blocks on (nonlocal_init_gamma: 1.0); gamma 0 is the identity asked for here
    nl = configure(YOLO(stock.replace("n", "n-nl", 1) + ".yaml" if stock != "yolov8n" else "yolov8n-nl.yaml"),
                   init_gamma=0.0)
    nl.load(str(path))
    dst = nl.model.eval()
    # every stock tensor is in the Non-local model, at its shifted index
    shift = {}
    k = 0
    for j, m in enumerate(dst.model):
        if not isinstance(m, NonLocal):
            shift[k] = j
            k += 1
    dsd = dst.state_dict()
    ssd = src.state_dict()
    for key, value in ssd.items():
        parts = key.split(".")
        parts[1] = str(shift[int(parts[1])])
        assert torch.equal(dsd[".".join(parts)], value), key
    assert len(ssd) == sum(1 for key in dsd if not isinstance(dst.model[int(key.split(".")[1])], NonLocal))
    x = torch.rand(2, 3, 96, 96)
    with torch.no_grad():
        a, b = src(x), dst(x)
    a, b = (a[0], b[0]) if isinstance(a, (list, tuple)) else (a, b)
    # identity blocks that return their input's memory layout: the predictions are bit-identical
    assert torch.equal(a, b), f"max difference {(a - b).abs().max().item():.3g}"


def test_pretrained_via_yolo_train_path(stock_checkpoints):
    """The trainer's path: get_model(cfg, weights) -> DetectionModel.load(weights) with a loaded checkpoint."""
    from ultralytics.nn.tasks import load_checkpoint

    weights, _ = load_checkpoint(str(stock_checkpoints["yolov8n"]))
    model = DetectionModel("yolov8n-nl.yaml", nc=80, verbose=False)
    model.load(weights)
    assert torch.equal(model.model[24].cv2[0][0].conv.weight, weights.model[22].cv2[0][0].conv.weight.float())
    assert torch.equal(model.model[11 + 2].cv1.conv.weight, weights.model[12].cv1.conv.weight.float())


class _Lines(logging.Handler):
    def __init__(self):
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record):
        self.lines.append(record.getMessage())


def _load_logged(model, weights) -> tuple[str, str]:
    """Load ``weights`` into ``model``; return Ultralytics' "Transferred" line and yolo-nonlocal's report."""
    from ultralytics.utils import LOGGER

    h = _Lines()
    LOGGER.addHandler(h)
    try:
        model.load(weights)
    finally:
        LOGGER.removeHandler(h)
    theirs = next(x for x in h.lines if x.startswith("Transferred"))
    ours = next(x for x in h.lines if x.startswith("yolo-nonlocal: pretrained weights"))
    return theirs, ours


def test_transfer_log_counts_what_landed_after_the_class_head_is_rebuilt(stock_checkpoints):
    """issue 11 item 2: an 80-class stock checkpoint into a 3-class Non-local model; counted after Ultralytics'
    own load (which rebuilds the class head), so the count is Ultralytics' own transfer, and the rest is named."""
    from ultralytics.nn.tasks import load_checkpoint

    weights, _ = load_checkpoint(str(stock_checkpoints["yolov8n"]))
    n_src = len(weights.state_dict())
    model = DetectionModel("yolov8n-nl.yaml", nc=3, verbose=False)
    theirs, ours = _load_logged(model, weights)
    transferred = int(re.search(r"Transferred (\d+)/", theirs).group(1))
    landed = re.search(r"(\d+)/(\d+) checkpoint tensors landed", ours)
    assert (int(landed.group(1)), int(landed.group(2))) == (transferred, n_src), (theirs, ours)
    dropped = n_src - transferred
    assert f"{dropped} dropped: {dropped} shape differs" in ours and "(80, " in ours and "-> (3, " in ours, ours
    n_block = sum(1 for k in model.state_dict() if isinstance(model.model[int(k.split(".")[1])], NonLocal))
    assert f"{n_block} block tensors of this model were not in the checkpoint" in ours


def test_transfer_log_names_block_tensors_that_have_no_place(tmp_path):
    """A Non-local checkpoint into a YAML with a block at P5 only: the P3 block's tensors are dropped, and said so."""
    torch.manual_seed(0)
    src = DetectionModel("yolov8n-nl.yaml", verbose=False)
    d = tasks.yaml_model_load("yolov8n-nl.yaml")
    del d["head"][6]  # the P3 block (row 17); later rows refer to 16, 19, 22
    d["head"][-1][0] = [16, 19, 22]
    dst = DetectionModel(d, verbose=False)
    _, ours = _load_logged(dst, {"model": src, "ema": None})
    n_p3 = sum(1 for k in src.state_dict() if k.startswith("model.17."))
    total = len(src.state_dict())
    assert f"{total - n_p3}/{total} checkpoint tensors landed" in ours, ours
    assert f"{n_p3} dropped: {n_p3} a block at a place where this model has none, e.g. model.17." in ours, ours


# ----------------------------------------------------------------------------------------------- GFLOPs
def test_summary_counts_the_attention():
    model = DetectionModel("yolov8s-nl.yaml", verbose=False)
    # yolov8s: P5 block 20x20, c1=512 (inter 256); P3 block 80x80, c1=128 (inter 64), its keys and values
    # sub-sampled 2x2 as shipped (40x40 = 1600 keys); 2 FLOPs per MAC
    expected = 2 * (400 * 400 * (256 + 256) + 6400 * 1600 * (64 + 64)) / 1e9
    assert attention_gflops(model, 640) == pytest.approx(expected, rel=1e-12)
    full = DetectionModel("yolov8s-nl-full.yaml", verbose=False)  # every P3 cell a key
    assert attention_gflops(full, 640) == pytest.approx(2 * (400 * 400 * 512 + 6400 * 6400 * 128) / 1e9, rel=1e-12)
    assert 2 * 6400 * 6400 * 128 / 1e9 == pytest.approx(10.49, abs=0.01)  # the figure for one P3 block
    with _hidden_attention():
        convs_only = torch_utils.get_flops.__wrapped__(model, 640)
    total = model.info(verbose=True)[3]
    assert total == pytest.approx(convs_only + expected, rel=1e-9)
    # non-square sizes: P3 is 80 x 40 at 640 x 320, its keys 40 x 20
    assert attention_gflops(model, [640, 320]) == pytest.approx(
        2 * (200 * 200 * 512 + 3200 * 800 * 128) / 1e9, rel=1e-12)
    stock = DetectionModel("yolov8s.yaml", verbose=False).info(verbose=True)[3]
    assert total > stock + expected  # the blocks' own 1x1 convolutions come on top


# -------------------------------------------------------------------------------------- AMP stability
FP16_MAX = 65504.0


def _block_logit_peaks(model, x):
    """max |theta^T phi| (unscaled, float32) seen by each block for input x."""
    peaks = {}

    def hook(m, inp):
        q, k, _ = m._embed(inp[0].float())
        peaks[m] = torch.bmm(q, k.transpose(1, 2)).abs().max().item()

    hs = [b.register_forward_pre_hook(hook) for b in model.modules() if isinstance(b, NonLocal)]
    with torch.no_grad():
        model(x)
    for h in hs:
        h.remove()
    return peaks


def test_reduced_precision_keeps_logits_finite(monkeypatch):
    """A NL model under fp16 autocast (CPU) with activations whose raw logits exceed fp16's range stays finite,
    while a block that multiplies unscaled logits in fp16 (the prototype that went NaN) does not."""
    if not hasattr(torch, "autocast"):
        pytest.skip("torch.autocast is missing")
    torch.manual_seed(0)
    d = {**yaml_model_load("yolov8n-nl.yaml"), "nonlocal_init_attention": "random"}  # logits to overflow
    model = DetectionModel(d, verbose=False).eval()
    blocks = [b for b in model.modules() if isinstance(b, NonLocal)]
    x = torch.rand(1, 3, 64, 64)
    for m in model.modules():  # data-dependent BN statistics: unit-scale features, as in a trained model
        if isinstance(m, torch.nn.BatchNorm2d):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model.train()(torch.cat([x, torch.rand(3, 3, 64, 64)]))
    model.eval()
    for b in blocks:  # a trained block: W_z no longer zero, so the attention reaches the output
        torch.nn.init.ones_(b.w_z[1].weight)
    for b in blocks:  # in forward order: large embeddings, raw logits at 4x fp16's largest number
        gain = (4 * FP16_MAX / _block_logit_peaks(model, x)[b]) ** 0.5
        assert 1 < gain < 1000  # fp16 holds the weights; only the products overflow
        with torch.no_grad():
            b.theta.weight.mul_(gain)
            b.phi.weight.mul_(gain)
    peaks = _block_logit_peaks(model, x)
    assert all(p > 2 * FP16_MAX for p in peaks.values())
    assert all(p * b.scale < FP16_MAX for b, p in peaks.items())  # the 1/sqrt(d) scale brings them into range

    def run():
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
            out = model(x)
        return out[0] if isinstance(out, (list, tuple)) else out

    assert torch.isfinite(run()).all()
    for b in blocks:
        b.backend = "sdpa"  # the fused kernel GPUs take
    assert torch.isfinite(run()).all()

    def naive(scale_logits: bool):
        def attend(self, q, k, v):  # what most copies do: logits in the autocast dtype
            q = q * self.scale if scale_logits else q
            return torch.bmm(torch.bmm(q, k.transpose(1, 2)).softmax(-1), v)
        return attend

    monkeypatch.setattr(NonLocal, "_softmax_attention", naive(scale_logits=True))
    assert torch.isfinite(run()).all()  # scaled: safe even when computed naively
    monkeypatch.setattr(NonLocal, "_softmax_attention", naive(scale_logits=False))
    assert not torch.isfinite(run()).all()  # unscaled fp16 logits overflow: this is what the test catches


def test_export_guard_refuses_low_opset():
    from types import SimpleNamespace

    model = DetectionModel("yolov8n-nl.yaml", verbose=False)
    exporter = SimpleNamespace(args=SimpleNamespace(opset=12, format="onnx"), model=model)
    with pytest.raises(ValueError, match="opset 14 on; opset=12 was asked"):
        checkpoints.export_guard(exporter)
    checkpoints.export_guard(SimpleNamespace(args=SimpleNamespace(opset=17, format="onnx"), model=model))
    stock = DetectionModel("yolov8n.yaml", verbose=False)
    checkpoints.export_guard(SimpleNamespace(args=SimpleNamespace(opset=12, format="onnx"), model=stock))
