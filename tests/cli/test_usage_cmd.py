"""`yolo-nonlocal usage`: in-process, the table it prints against block_usage's numbers, and refused
arguments; plus one smoke test through the console script."""

from __future__ import annotations

import subprocess

import pytest

from yolo_nonlocal.cli.usage import main


def _rows(out: str) -> list[list[str]]:
    return [[c.strip() for c in line.split("|")[1:-1]] for line in out.splitlines() if line.startswith("| 1")]


def test_prints_the_table_of_block_usage(nl_checkpoint, cli_images, capsys):
    from yolo_nonlocal.tools.block_usage import block_usage

    assert main([f"model={nl_checkpoint}", f"source={cli_images}", "imgsz=128", "max_images=2", "queries=16"]) == 0
    out = capsys.readouterr().out
    header = next(line for line in out.splitlines() if line.startswith("| layer"))
    assert "constant part" in header and "position-varying part" in header and "query distance" in header
    rows = _rows(out)
    assert [int(r[0]) for r in rows] == [10, 17]
    expected = block_usage(str(nl_checkpoint), cli_images, imgsz=128, max_images=2, queries=16)
    for cells, u in zip(rows, expected):
        assert cells[1] == "embedded_gaussian" and int(cells[-1]) == 2
        assert float(cells[3]) == pytest.approx(u.gamma, abs=5e-5) and float(cells[4]) == pytest.approx(u.beta, abs=5e-5)
        for col, value in ((5, u.residual), (6, u.constant), (7, u.varying), (8, u.residual_max)):
            assert float(cells[col].rstrip("%")) == pytest.approx(100 * value, abs=0.006)
        assert float(cells[9]) == pytest.approx(u.query_distance, abs=5e-5)
    assert "For scale, the model's own 6 shortcut bottlenecks: residual median" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["source=."], "missing model=..."),
        (["model=missing.pt", "source=."], "model=missing.pt does not exist"),
        (["model=yolov8n-nl.yaml", "source=/no/such/dir"], "/no/such/dir does not exist"),
        (["model=yolov8n-nl.yaml", "source=.", "colour=red"], "unknown argument 'colour'"),
        (["model=yolov8n-nl.yaml", "source=.", "imgsz=big"], "imgsz='big' must be an integer"),
        (["model=yolov8n-nl.yaml", "source=.", "max_images=-1"], "max_images='-1': must be >= 0"),
        (["model=yolov8n-nl.yaml", "source=.", "queries=1"], "queries='1': must be at least 2"),
        (["model=yolov8n-nl.yaml", "source=.", "max_image=3"], "did you mean max_images=?"),
        (["model=yolov8n.yaml", "source=IMAGES"], "has no NonLocal layer"),
    ],
)
def test_bad_arguments(cli_images, capsys, argv, message):
    argv = [a.replace("IMAGES", str(cli_images)) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("yolo-nonlocal usage: error: ") and message in err


def test_console_script_smoke(console_script, nl_checkpoint, cli_images):
    r = subprocess.run(
        [console_script, "usage", f"model={nl_checkpoint}", f"source={cli_images}", "imgsz=128", "max_images=1"],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert [int(r[0]) for r in _rows(r.stdout)] == [10, 17]
