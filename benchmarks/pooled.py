"""Pool the per-seed test AP of several rounds of benchmarks/small_objects.py into one table per task.

The runs of one round live in a git-ignored output folder and are gone by the next session; what stays is
each round's small_objects.json (this round's, committed under benchmarks/results/) or, for older rounds,
their published per-seed figures (benchmarks/results/rounds4-5.csv, one decimal, with the machine). This
script reads any mix of the two, refuses a (task, arm, seed) that two sources give differently (more than
0.05 AP apart: rounding), and prints per task and arm the seeds, mean ± std, the paired difference against
the baseline of the same seeds with its 95% t-interval (small_objects.paired_difference), and, for the
positive control (a task whose small_objects.json carries its cue distance and reference lines), how many
seeds scored above every rule-blind line:
above the cap (exact boxes, every class, equal scores) and above the mean + 3 std of the random-score line
(exact boxes, every class, random scores), which no detector that ignores the rule reaches.

    python benchmarks/pooled.py benchmarks/results/rounds4-5.csv benchmarks/results/round6/small_objects.json \
        benchmarks/results/round7/small_objects.json [--against nl]

``--against ARM`` adds a column pairing every other arm with ARM (say, the shipped ``nl``) on the seeds both
have: whether a setting beats the default, not only the baseline.

Only the fine-tune protocol of the quick preset is pooled (15-epoch fine-tunes): a source of another
preset or protocol is refused. Runs of another baseline family (``small_objects.py --model yolo11n``) get
tables of their own ("farcue, yolo11n family"): their baseline is another model, so they pair only among
themselves. A CSV is yolov8n's unless it has a ``model`` column.
"""

from __future__ import annotations

import argparse
import csv
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from small_objects import paired_difference  # noqa: E402

def blind_line(references: dict) -> float | None:
    """The highest rule-blind AP (in %) of a task's exact reference lines: the cap, or the random-score line's
    mean + 3 std; None without them."""
    ex = references.get("exact", {})
    tied = ex.get("blind_tied", {}).get("AP")
    rnd = ex.get("blind_random", {})
    lines = [v for v in (tied, None if rnd.get("AP") is None else rnd["AP"] + 3 * (rnd.get("AP_std") or 0)) if v is not None]
    return 100 * max(lines) if lines else None


DEFAULT_FAMILY = "yolov8n"  # small_objects.py's default --model, and the rounds 4-5 CSV's


def table_name(task: str, family: str) -> str:
    """The table a run belongs to: its task, and its baseline family where that is not the default."""
    return task if family == DEFAULT_FAMILY else f"{task}, {family} family"


def read_source(path: Path, lines: dict[str, float] | None = None) -> tuple[list[dict], str]:
    """(rows of task, arm, seed, AP in %, source) and a line naming the source's machine(s); a JSON source's
    rule-blind lines (:func:`blind_line`) go into ``lines``, by task."""
    if path.suffix == ".csv":
        with open(path) as f:
            raw = list(csv.DictReader(line for line in f if not line.startswith("#")))
        rows = [{"task": table_name(r["task"], r.get("model") or DEFAULT_FAMILY), "arm": r["arm"], "seed": int(r["seed"]),
                 "AP": float(r["test_AP"]),
                 "source": f"{path.name} (round {r['round']}, machine {r['machine']})"} for r in raw]  # fmt: skip
        return rows, f"{path.name}: " + ", ".join(sorted({f"round {r['round']} machine {r['machine']}" for r in raw}))
    res = json.loads(path.read_text())
    args = res["args"]
    if args.get("preset") != "quick" or args.get("finetune_epochs") != 15:
        raise SystemExit(f"{path}: preset {args.get('preset')}, {args.get('finetune_epochs')}-epoch fine-tunes; "
                         "only the quick preset's 15-epoch fine-tunes are pooled")  # fmt: skip
    family = args.get("model") or DEFAULT_FAMILY
    rows = [{"task": table_name(r["task"], family), "arm": r["arm"], "seed": int(r["seed"]), "AP": 100 * r["test"]["AP"],
             "source": str(path)} for r in res["runs"] if r["protocol"] == "finetune" and r.get("test", {}).get("AP") is not None]  # fmt: skip
    for task, refs in res.get("references", {}).items():
        if refs.get("cue_distance") is None:  # a task whose baseline is not capped by construction
            continue
        line = blind_line(refs)
        if lines is not None and line is not None:
            name = table_name(task, family)
            lines[name] = max(line, lines.get(name, line))
    return rows, f"{path}: {res['machine']['line']}"


def pool(paths: list[Path]) -> tuple[dict[tuple[str, str, int], dict], list[str], dict[str, float]]:
    table: dict[tuple[str, str, int], dict] = {}
    machines: list[str] = []
    blind: dict[str, float] = {}
    for p in paths:
        rows, line = read_source(p, blind)
        machines.append(line)
        for r in rows:
            key = (r["task"], r["arm"], r["seed"])
            if key in table and abs(table[key]["AP"] - r["AP"]) > 0.05:
                raise SystemExit(f"{key}: {table[key]['AP']:.2f} in {table[key]['source']} but {r['AP']:.2f} in {r['source']}")
            if key not in table or r["source"].endswith(".json"):  # the full-precision figure wins a tie
                table[key] = r
    return table, machines, blind


def _paired_cell(table: dict, task: str, aps: dict[int, float], ref: str) -> str:
    """The paired difference of one arm's ``aps`` (by seed) against arm ``ref`` on the seeds both have."""
    both = [s for s in aps if (task, ref, s) in table]
    d = paired_difference([aps[s] for s in both], [table[(task, ref, s)]["AP"] for s in both])
    ci = f" [{d['ci'][0]:+.1f}, {d['ci'][1]:+.1f}]" if d["ci"] else ""
    return f"{d['mean']:+.1f}{ci} (n={d['n']})" if d["n"] else f"no {ref} of these seeds"


def report(table: dict[tuple[str, str, int], dict], machines: list[str], blind: dict[str, float],
           against: str | None = None) -> str:
    """The pooled tables, one per task; ``against`` adds a column of paired differences against that arm."""
    lines = ["# Pooled test AP (%) of benchmarks/small_objects.py, quick preset, fine-tune protocol", ""]
    lines += [f"- {m}" for m in machines]
    for task in dict.fromkeys(k[0] for k in table):
        seeds = sorted({k[2] for k in table if k[0] == task})
        arms = list(dict.fromkeys(k[1] for k in table if k[0] == task))
        arms.sort(key=lambda a: a != "baseline")
        cap = blind.get(task)
        extra = against is not None and against != "baseline" and against in arms
        head = ["arm", *(f"s{s}" for s in seeds), "n", "mean ± std", "paired diff. vs baseline, 95% CI"]
        head += [f"paired diff. vs {against}, 95% CI"] if extra else []
        head += [f"above every rule-blind line ({cap:.1f})"] if cap is not None else []
        lines += ["", f"## {task}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for arm in arms:
            aps = {s: table[(task, arm, s)]["AP"] for s in seeds if (task, arm, s) in table}
            vals = list(aps.values())
            ms = f"{statistics.fmean(vals):.1f}" + (f" ± {statistics.stdev(vals):.1f}" if len(vals) > 1 else "")
            cells = [arm, *(f"{aps[s]:.1f}" if s in aps else "" for s in seeds), str(len(vals)), ms]
            cells.append("" if arm == "baseline" else _paired_cell(table, task, aps, "baseline"))
            if extra:
                cells.append("" if arm in ("baseline", against) else _paired_cell(table, task, aps, against))
            if cap is not None:
                cells.append("-" if arm == "baseline" else f"{sum(v > cap for v in vals)} of {len(vals)}")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sources", nargs="+", type=Path, help="small_objects.json files and per-seed CSV files")
    p.add_argument("--against", metavar="ARM", help="also pair every other arm with this one (e.g. nl, the "
                   "shipped model), on the seeds both have")
    args = p.parse_args(argv)
    missing = [str(s) for s in args.sources if not s.is_file()]
    if missing:
        raise SystemExit(f"no such file: {', '.join(missing)}")
    table, machines, blind = pool(args.sources)
    print(report(table, machines, blind, args.against))
    return 0


if __name__ == "__main__":
    sys.exit(main())
