"""benchmarks/pooled.py: per-seed figures of a CSV and of a small_objects.json pooled, paired by seed, with
conflicting figures and other presets refused, and the committed rounds 4-5 figures reproducing the paired
difference published for them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import pooled  # noqa: E402  (tests/benchmarks/conftest.py puts benchmarks/ on sys.path)

RESULTS = Path(pooled.__file__).resolve().parent / "results"


def _csv(path: Path, rows: list[tuple]) -> Path:
    path.write_text("# a comment\ntask,arm,seed,test_AP,round,machine\n"
                    + "".join(f"{t},{a},{s},{ap},1,X\n" for t, a, s, ap in rows))  # fmt: skip
    return path


def _json(path: Path, rows: list[tuple], preset: str = "quick", model: str | None = None) -> Path:
    runs = [{"task": t, "arm": a, "seed": s, "protocol": "finetune", "test": {"AP": ap / 100}} for t, a, s, ap in rows]
    refs = {"farcue": {"exact": {"blind_tied": {"AP": 0.50}, "blind_random": {"AP": 0.534, "AP_std": 0.005}},
                       "cue_distance": 727.0},
            "neutral": {"exact": {"blind_tied": {"AP": 0.333}}}}  # not capped by construction: no column
    args = {"preset": preset, "finetune_epochs": 15, **({"model": model} if model else {})}
    path.write_text(json.dumps({"args": args, "machine": {"line": "here"},
                                "runs": runs, "references": refs}))  # fmt: skip
    return path


def test_sources_pool_and_pair_by_seed(tmp_path, capsys):
    a = _csv(tmp_path / "a.csv", [("farcue", "baseline", 0, 40.0), ("farcue", "nl", 0, 80.0), ("farcue", "baseline", 1, 42.0)])
    b = _json(tmp_path / "b.json", [("farcue", "nl", 1, 54.0), ("farcue", "baseline", 0, 40.02), ("farcue", "nl", 2, 90.0)])
    assert pooled.main([str(a), str(b)]) == 0
    out = capsys.readouterr().out
    nl = next(line for line in out.splitlines() if line.startswith("| nl |"))
    # seed 2 has no baseline: the pair is over seeds 0 and 1, (80 - 40.02 + 54 - 42) / 2 = 25.99
    assert "| 80.0 | 54.0 | 90.0 | 3 |" in nl and "+26.0 [" in nl and "(n=2)" in nl
    # the highest rule-blind line is the random-score one, 53.4 + 3 x 0.5 = 54.9: 54.0 is not above it
    assert "above every rule-blind line (54.9)" in out and nl.endswith("| 2 of 3 |")
    assert out.count("rule-blind line") == 1, "only the positive control gets the column"
    assert "| baseline | 40.0 | 42.0 |  | 2 |" in out, "the JSON's full-precision figure replaces the CSV's"
    assert "- b.json: here" in out.replace(str(tmp_path) + "/", "")


def test_conflicts_and_other_presets_are_refused(tmp_path):
    a = _csv(tmp_path / "a.csv", [("neutral", "nl", 0, 40.0)])
    b = _json(tmp_path / "b.json", [("neutral", "nl", 0, 41.0)])
    with pytest.raises(SystemExit, match=r"\('neutral', 'nl', 0\): 40.00 in a.csv .* but 41.00 in"):
        pooled.main([str(a), str(b)])
    with pytest.raises(SystemExit, match="only the quick preset's 15-epoch fine-tunes"):
        pooled.main([str(_json(tmp_path / "c.json", [("neutral", "nl", 0, 41.0)], preset="full"))])
    with pytest.raises(SystemExit, match="no such file"):
        pooled.main([str(tmp_path / "missing.json")])


def test_published_rounds_reproduce_their_five_seed_interval(capsys):
    assert pooled.main([str(RESULTS / "rounds4-5.csv")]) == 0
    out = capsys.readouterr().out
    farcue = out.split("## neutral")[0]
    assert "| nl | 82.4 | 43.6 | 74.8 | 45.1 | 80.3 | 5 | 65.2 ± 19.3 | +22.6 [-0.7, +45.9] (n=5) |" in farcue
    assert "rule-blind line" not in farcue, "the CSV carries no reference lines"
    assert "| nl | 45.0 | 37.0 | 46.2 | 31.2 | 43.9 | 5 | 40.7 ± 6.4 | -1.0 [-1.9, -0.2] (n=5) |" in out.split("## neutral")[1]


def test_against_pairs_every_arm_with_another_arm(tmp_path, capsys):
    a = _csv(tmp_path / "a.csv", [("neutral", "baseline", 0, 40.0), ("neutral", "nl", 0, 39.0), ("neutral", "g", 0, 40.5),
                                  ("neutral", "baseline", 1, 44.0), ("neutral", "nl", 1, 43.0), ("neutral", "g", 1, 43.5),
                                  ("neutral", "g", 2, 50.0)])  # fmt: skip
    assert pooled.main([str(a), "--against", "nl"]) == 0
    out = capsys.readouterr().out
    assert "| paired diff. vs baseline, 95% CI | paired diff. vs nl, 95% CI |" in out
    g = next(line for line in out.splitlines() if line.startswith("| g |"))
    # vs baseline over seeds 0-1: (0.5 - 0.5) / 2 = 0; vs nl: (1.5 + 0.5) / 2 = 1.0, t-interval 1.0 +- 12.706 * 0.5
    assert "| +0.0 [-6.4, +6.4] (n=2) | +1.0 [-5.4, +7.4] (n=2) |" in g
    assert next(line for line in out.splitlines() if line.startswith("| nl |")).endswith("(n=2) |  |")
    assert pooled.main([str(a)]) == 0 and "vs nl" not in capsys.readouterr().out


def test_other_families_get_tables_of_their_own(tmp_path, capsys):
    """A yolo11n baseline is another model: its runs neither clash with nor pair with yolov8n's of the same seed."""
    v8 = _json(tmp_path / "v8.json", [("farcue", "baseline", 7, 40.0), ("farcue", "nl", 7, 80.0)], model="yolov8n")
    v11 = _json(tmp_path / "v11.json", [("farcue", "baseline", 7, 78.0), ("farcue", "nl", 7, 77.0),
                                        ("farcue", "baseline", 8, 83.0), ("farcue", "nl", 8, 79.0)], model="yolo11n")  # fmt: skip
    assert pooled.main([str(v8), str(v11)]) == 0
    out = capsys.readouterr().out
    own, other = out.split("## farcue, yolo11n family")
    assert "## farcue\n" in own and "| nl | 80.0 | 1 | 80.0 | +40.0 (n=1) |" in own
    assert "| nl | 77.0 | 79.0 | 2 | 78.0 ± 1.4 | -2.5 [" in other and "(n=2) | 2 of 2 |" in other
