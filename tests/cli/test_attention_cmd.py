"""`yolo-nonlocal attention`: in-process, the PNG and weights it writes (one per model, even when every
checkpoint is called best.pt), the weights against a direct API call, and refused arguments; plus one
smoke test through the console script."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from yolo_nonlocal.cli.attention import main, query_value


def test_three_models_into_one_project_do_not_overwrite(nl_checkpoint, cli_images, tmp_path, capsys):
    """Every Ultralytics run names its checkpoint best.pt: the run folder goes into the file name."""
    ckpts = []
    for run in ("run-a", "run-b", "run-c"):
        path = tmp_path / run / "weights" / "best.pt"
        path.parent.mkdir(parents=True)
        shutil.copy(nl_checkpoint, path)
        ckpts.append(path)
    src = cli_images / "000001.png"
    project = tmp_path / "attn"
    pngs = []
    for ckpt in ckpts:
        assert main([f"model={ckpt}", f"source={src}", "query=60,90", "imgsz=128", f"project={project}"]) == 0
        pngs.append(Path(capsys.readouterr().out.strip().splitlines()[-1]))
    assert [p.name for p in pngs] == [f"run-{k}-best_000001_layer17_x60_y90.png" for k in "abc"]
    assert sorted(project.glob("*.png")) == sorted(pngs) and len(list(project.glob("*.npy"))) == 3


def test_writes_the_picture_and_the_weights_of_the_api(nl_checkpoint, cli_images, tmp_path, capsys):
    from yolo_nonlocal.tools.attention_map import attention_map

    src = cli_images / "000000.png"
    assert main([f"model={nl_checkpoint}", f"source={src}", "query=101,37", "layer=10", "imgsz=128",
                 f"project={tmp_path}"]) == 0  # fmt: skip
    captured = capsys.readouterr()
    png = Path(captured.out.strip())
    assert png.name == "run-a-best_000000_layer10_x101_y37.png"
    assert "layer 10 (embedded_gaussian, grid 4x4" in captured.err and "x the uniform 1/N' = 0.0625" in captured.err
    picture = cv2.imread(str(png))
    assert picture is not None and max(picture.shape[:2]) >= 512, "a 128 px source is drawn large enough to read"
    weights = np.load(png.with_suffix(".npy"))
    expected = attention_map(str(nl_checkpoint), cv2.imread(str(src)), (101.0, 37.0), layer=10, imgsz=128).weights
    np.testing.assert_array_equal(weights, expected)
    assert weights.sum() == pytest.approx(1.0, abs=1e-5)


@pytest.mark.parametrize(
    "argv, message",
    [
        (["model=M", "source=S", "query=500,10"], "outside the 128x128 image"),
        (["model=M", "source=S", "query=1;2"], "query='1;2': must be X,Y"),
        (["model=M", "source=S", "query=10,10", "layer=5"], "layer=5 is not a NonLocal layer"),
        (["model=M", "source=S", "query=10,10", "layer=P3"], "layer='P3' must be an integer"),
        (["model=M", "source=/nonexistent.png", "query=1,1"], "not a readable image"),
        (["model=yolov8n.yaml", "source=S", "query=1,1"], "has no NonLocal layer"),
        (["model=missing.pt", "source=S", "query=1,1"], "does not exist"),
        (["source=S", "query=1,1"], "missing model=..."),
        (["model=M", "source=S", "query=1,1", "colour=red"], "unknown argument 'colour'"),
        (["model=M", "source=S", "query=1,1", "imgsz=16"], "imgsz=16 must be >= 32"),
    ],
)
def test_bad_arguments(nl_checkpoint, cli_images, tmp_path, capsys, argv, message):
    argv = [a.replace("=M", f"={nl_checkpoint}").replace("=S", f"={cli_images / '000000.png'}") for a in argv]
    assert main([*argv, f"project={tmp_path / 'o'}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolo-nonlocal attention: error: ") and message in err
    assert not (tmp_path / "o").exists()


def test_query_value():
    assert query_value("120,64") == (120.0, 64.0) and query_value("(1.5, 2)") == (1.5, 2.0)
    for bad in ("1", "1,2,3", "a,b"):
        with pytest.raises(ValueError, match="must be X,Y"):
            query_value(bad)


def test_console_script_smoke(console_script, nl_checkpoint, cli_images, tmp_path):
    src = cli_images / "000002.png"
    r = subprocess.run(
        [console_script, "attention", f"model={nl_checkpoint}", f"source={src}", "query=5,5", "imgsz=128",
         f"project={tmp_path}"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert Path(r.stdout.strip()) == tmp_path / "run-a-best_000002_layer17_x5_y5.png"
    assert Path(r.stdout.strip()).is_file()
