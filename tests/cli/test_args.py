"""yolo_nonlocal.cli.args: the one key=value grammar of every sub-command, tested through parse() and run()."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from yolo_nonlocal.cli.args import EXIT_USAGE, Arg, ArgumentError, HelpRequested, parse, run, suggest, usage

SPEC = [
    Arg("path", required=True, help="where"),
    Arg("epochs", int, 10, "how long"),
    Arg("lr", float, 0.01, "how fast"),
    Arg("dry_run", bool, False, "change nothing"),
    Arg("classes", list, None, "which classes"),
    Arg("mode", str, "fast", "how", choices=("fast", "slow")),
]


def _parse(*argv: str, **kw):
    return parse(list(argv), SPEC, **kw)


def test_types_and_defaults():
    v = _parse("path=a=b", "epochs=3", "lr=1e-3", "dry_run=yes", "classes=[0,2]", "mode=slow")
    assert v == {"path": "a=b", "epochs": 3, "lr": 1e-3, "dry_run": True, "classes": [0, 2], "mode": "slow"}
    assert _parse("path=p") == {"path": "p", "epochs": 10, "lr": 0.01, "dry_run": False, "classes": None, "mode": "fast"}
    assert _parse("path=p", "classes=3")["classes"] == [3]


@pytest.mark.parametrize("text, value", [("True", True), ("false", False), ("1", True), ("0", False), ("ON", True),
                                         ("no", False)])  # fmt: skip
def test_bools(text, value):
    assert _parse("path=p", f"dry_run={text}")["dry_run"] is value


@pytest.mark.parametrize(
    "argv, message",
    [
        (["path=p", "epochs=ten"], "epochs='ten' must be an integer"),
        (["path=p", "lr=fast"], "lr='fast' must be a number"),
        (["path=p", "dry_run=maybe"], "dry_run='maybe' is not a boolean; use dry_run=True or dry_run=False"),
        (["path=p", "classes=a,b"], "comma list of integers"),
        (["path=p", "classes=,"], "classes= is empty"),
        (["path=p", "mode=medium"], "mode='medium' is not one of: fast, slow"),
        (["path=p", "epochs=1", "epochs=2"], "argument 'epochs' is given twice"),
        (["path=p", "path=q"], "argument 'path' is given twice"),
        (["path=p", "epoch=3"], "unknown argument 'epoch'; did you mean epochs=?"),
        (["path=p", "colour=red"], "unknown argument 'colour' (known: path, epochs"),
        (["epochs=3"], "missing path=..."),
        (["path=p", "epochs="], "argument epochs= has no value"),
        (["path=p", "=3"], "has no key"),
        (["path=p", "bare"], "argument 'bare' is not key=value"),
        (["path=p", "--fast"], "unknown flag '--fast'"),
    ],
)
def test_errors_name_the_argument(argv, message):
    with pytest.raises(ArgumentError) as e:
        _parse(*argv)
    assert message in str(e.value)


def test_dash_in_a_key_reads_as_underscore():
    assert _parse("path=p", "dry-run=True")["dry_run"] is True
    with pytest.raises(ArgumentError, match="given twice"):
        _parse("path=p", "dry-run=True", "dry_run=False")


def test_positional_fills_one_key_once():
    assert _parse("~/yolov5", positional="path")["path"] == "~/yolov5"
    assert _parse("epochs=2", "~/yolov5", positional="path")["path"] == "~/yolov5"
    with pytest.raises(ArgumentError, match="given twice"):
        _parse("a", "path=b", positional="path")
    with pytest.raises(ArgumentError, match="'b' is not key=value"):
        _parse("a", "b", positional="path")


def test_aliases_are_legacy_flags():
    aliases = {"--dry-run": "dry_run=True"}
    assert _parse("path=p", "--dry-run", aliases=aliases)["dry_run"] is True
    with pytest.raises(ArgumentError, match="given twice"):
        _parse("path=p", "--dry-run", "dry_run=False", aliases=aliases)
    with pytest.raises(ArgumentError, match=r"flags known here: --dry-run, --help"):
        _parse("path=p", "--force", aliases=aliases)


def test_converter_functions_and_extra_keys():
    def pair(text: str):
        a, b = text.split(",")  # ValueError for anything but two parts
        return float(a), float(b)

    spec = [Arg("query", pair, required=True)]
    assert parse(["query=1,2"], spec) == {"query": (1.0, 2.0)}
    with pytest.raises(ArgumentError, match=r"query='1': "):
        parse(["query=1"], spec)
    seen = parse(["query=1,2", "batch=4"], spec, extra=lambda k, t: (k, int(t)))
    assert seen == {"query": (1.0, 2.0), "batch": ("batch", 4)}
    with pytest.raises(ArgumentError, match="given twice"):
        parse(["query=1,2", "batch=4", "batch=5"], spec, extra=lambda k, t: t)


def test_help_is_requested_anywhere():
    for argv in (["--help"], ["path=p", "-h"], ["help"]):
        with pytest.raises(HelpRequested):
            _parse(*argv)


def test_suggest_wording():
    assert suggest("epoch", ["epochs", "batch"]) == "; did you mean epochs=?"
    assert suggest("zzz", ["epochs"]) == ""


def test_usage_lists_every_argument_and_flag():
    text = usage("demo", SPEC, "Does a thing.", positional="path", aliases={"--dry-run": "dry_run=True"})
    assert text.startswith("usage: yolo-nonlocal demo [path=]PATH [epochs=10]")
    for a in SPEC:
        assert f"  {a.name}" in text
    assert "--dry-run is dry_run=True" in text and "Does a thing." in text and "status 2" in text


def _action(**values):
    print("ran", sorted(values.items()))
    return 0


def test_run_help_exits_0_and_errors_exit_2(capsys):
    assert run("demo", ["--help"], SPEC, _action, description="Does a thing.") == 0
    assert "usage: yolo-nonlocal demo" in capsys.readouterr().out
    assert run("demo", ["epochs=1", "epochs=2", "path=p"], SPEC, _action) == EXIT_USAGE == 2
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == "yolo-nonlocal demo: error: argument 'epochs' is given twice\n"
    assert run("demo", ["path=p"], SPEC, _action) == 0
    assert "ran [('classes', None)" in capsys.readouterr().out


def test_run_turns_the_actions_value_and_os_errors_into_exit_2(capsys):
    def fails(**values):
        raise ValueError("the model has no NonLocal layer")

    def missing(**values):
        open("/no/such/file.yaml")

    assert run("usage", ["path=p"], SPEC, fails) == 2
    assert capsys.readouterr().err == "yolo-nonlocal usage: error: the model has no NonLocal layer\n"
    assert run("usage", ["path=p"], SPEC, missing) == 2
    assert capsys.readouterr().err == "yolo-nonlocal usage: error: /no/such/file.yaml: No such file or directory\n"

    def bug(**values):
        raise KeyError("a programming error is not an argument error")

    with pytest.raises(KeyError):
        run("usage", ["path=p"], SPEC, bug)


def test_run_returns_the_actions_status(capsys):
    assert run("demo", ["path=p"], SPEC, lambda **v: 3) == 3
    assert run("demo", ["path=p"], SPEC, lambda **v: None) == 0


def test_run_maps_a_broken_pipe_to_a_quiet_exit(monkeypatch, capsys):
    """`yolo-nonlocal CMD | head`: the reader went away; the command ends with status 0 and no traceback.
    BrokenPipeError is an OSError: it must not be reported as the command's error."""
    quieted = []
    monkeypatch.setattr("yolo_nonlocal.cli.args.quiet_broken_pipe", lambda: quieted.append(True))

    def writes(**values):
        raise BrokenPipeError(32, "Broken pipe")

    assert run("demo", ["path=p"], SPEC, writes) == 0
    assert quieted == [True] and capsys.readouterr().err == ""


@pytest.mark.parametrize("argv", [["--help"], ["usage", "--help"], ["attention", "--help"]])
def test_help_piped_into_a_closed_reader_is_quiet(argv):
    """The real case, through a pipe whose reader has already exited (the help text is longer than the pipe
    buffer would need to be for the writer to see EPIPE at its flush)."""
    r, w = os.pipe()
    os.close(r)  # the reader is gone before anything is written
    proc = subprocess.run([sys.executable, "-m", "yolo_nonlocal", *argv], stdout=w, stderr=subprocess.PIPE, text=True,
                          timeout=120)  # fmt: skip
    os.close(w)
    assert "Traceback" not in proc.stderr and "BrokenPipeError" not in proc.stderr, proc.stderr
    assert proc.returncode == 0
