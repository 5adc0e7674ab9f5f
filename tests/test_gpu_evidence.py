"""benchmarks/gpu_evidence.sh's pieces that can be checked without a GPU: the polars stand-in it puts on the
GPU machine's path must read Ultralytics' results.csv exactly as polars does, and the script refuses bad stages."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

RESULTS_CSV = (
    "epoch,time,train/box_loss,metrics/mAP50-95(B),coco/AP,coco/APm,lr/pg0\n"
    "1,8.06775,0.01313,0,0,-1,0.000633333\n"
    "2,15.84,0.54102,0.0123,0.0119,-1,0.00122\n"
    "3,23.5,nan,0.5,0.49,-1,1e-05\n"
)


def _stub():
    spec = importlib.util.spec_from_file_location("polars_stand_in", ROOT / "benchmarks" / "gpu_stub" / "polars" / "__init__.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_polars_stand_in_reads_results_csv_as_polars_does(tmp_path):
    pl = pytest.importorskip("polars")
    data = RESULTS_CSV.encode()
    expected = pl.read_csv(data, infer_schema_length=None).to_dict(as_series=False)
    got = _stub().read_csv(data, infer_schema_length=None).to_dict(as_series=False)
    assert list(got) == list(expected)
    for key in expected:
        for a, b in zip(got[key], expected[key]):
            assert a == b or (a != a and b != b), (key, a, b)  # NaN reads as NaN in both
    path = tmp_path / "results.csv"
    path.write_text(RESULTS_CSV)
    assert _stub().read_csv(path).to_dict(as_series=False)["coco/AP"] == [0.0, 0.0119, 0.49]


def test_script_refuses_an_unknown_stage(tmp_path):
    env = {**os.environ, "STAGES": "blok", "OUT": str(tmp_path), "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_evidence.sh")], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 2
    assert "unknown stage 'blok'" in r.stderr
    assert "ultralytics" in (tmp_path / "versions.txt").read_text()
