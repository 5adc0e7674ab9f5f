"""Tests of yolo_nonlocal.integrations.yolov5.api on synthetic trees: patch, dry run, idempotence, unpatch, status.

The failure paths of the file transaction are in test_yolov5_transaction.py; the command line in
test_yolov5_cli.py; real upstream trees in test_yolov5_upstream.py.
"""

from __future__ import annotations

import shutil
import subprocess

import pytest
from yolov5_trees import (
    LAYOUTS,
    cli,
    expected_yamls,
    snapshot,
    tree_dirs,
    tree_root,
    write_tree,
)

from yolo_nonlocal.integrations.yolov5 import (
    MARKER,
    STATE_DIR,
    YAMLS,
    YOLO_PY,
    PatchError,
    patch,
    source_yaml_dir,
    status,
    unpatch,
    unpatch_source,
)
from yolo_nonlocal.integrations.yolov5.yamls import yaml_modules


def test_dry_run_prints_a_diff_that_git_applies_and_changes_nothing(tmp_path, layout, capsys):
    root = tree_root(tmp_path, layout)
    before, dirs = snapshot(root), tree_dirs(root)
    rc, diff, err = cli(capsys, "patch", str(root), "--dry-run")
    assert rc == 0, err
    assert snapshot(root) == before and tree_dirs(root) == dirs
    assert diff.startswith("diff --git a/models/yolo.py b/models/yolo.py\n")
    added = [ln[1:] for ln in diff.split("diff --git")[1].splitlines() if ln.startswith("+") and not ln.startswith("+++")]
    assert len(added) == 10 and all(ln.rstrip().endswith(MARKER) or f"{MARKER}:" in ln for ln in added)
    for _, dst in YAMLS[LAYOUTS[layout]["flavour"]]:
        assert f"+++ b/{dst}\n" in diff
    assert "dry run" in err
    if shutil.which("git"):  # the printed diff is a valid patch for this exact tree
        check = subprocess.run(["git", "apply", "--check", "-"], input=diff, text=True, cwd=root, capture_output=True)
        assert check.returncode == 0, check.stderr


def test_patch_is_idempotent_and_unpatch_restores_every_byte(tmp_path, layout):
    root = tree_root(tmp_path, layout)
    before, dirs = snapshot(root), tree_dirs(root)
    flavour = LAYOUTS[layout]["flavour"]
    first = patch(root)
    assert first.changed == (YOLO_PY, *(dst for _, dst in YAMLS[flavour]))
    after = snapshot(root)
    second = patch(root)
    assert second.already_patched and second.diff == "" and snapshot(root) == after
    # the copied YAMLs are the packaged ones, byte for byte (or, for a tree without SPPF, their SPP variant)
    src = source_yaml_dir()
    for s, d in YAMLS[flavour]:
        if LAYOUTS[layout].get("spp_only"):
            assert after[d] != (src / s).read_bytes() and "SPPF" not in yaml_modules(after[d].decode())
            assert after[d] == expected_yamls(root, flavour)[d]
        else:
            assert after[d] == (src / s).read_bytes()
    # only models/yolo.py among the tree's own files changed, and only by marked lines
    changed = {k for k in before if before[k] != after.get(k)}
    assert changed == {YOLO_PY}
    assert unpatch_source(after[YOLO_PY].decode()) == before[YOLO_PY].decode()
    res = unpatch(root)
    assert res.restored[0] == YOLO_PY and not res.kept and not res.stripped
    assert snapshot(root) == before and tree_dirs(root) == dirs
    assert not (root / STATE_DIR).exists()
    # unpatching a stock tree is a no-op
    assert unpatch(root).was_patched is False and snapshot(root) == before


def test_existing_user_yaml_is_never_overwritten(tmp_path):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    (root / "models" / "yolov5s-nl.yaml").write_text("# my own non-local model\n")
    before = snapshot(root)
    with pytest.raises(PatchError, match=r"models/yolov5s-nl\.yaml exists and differs"):
        patch(root)
    assert snapshot(root) == before


def test_a_folder_where_a_yaml_goes_is_refused_cleanly(tmp_path, capsys):
    """Issue 14.8: a folder named like a YAML target gave a raw IsADirectoryError traceback."""
    root = write_tree(tmp_path / "clone", "yolov5-star")
    (root / "models" / "yolov5s-nl.yaml").mkdir()
    before, dirs = snapshot(root), tree_dirs(root)
    with pytest.raises(PatchError, match=r"models/yolov5s-nl\.yaml is a folder .*Rename or remove"):
        patch(root)
    with pytest.raises(PatchError, match=r"is a folder"):
        patch(root, dry_run=True)
    rc, out, err = cli(capsys, "yolov5", "patch", f"path={root}")
    assert rc == 2 and err.startswith("yolo-nonlocal yolov5 patch: error: models/yolov5s-nl.yaml is a folder")
    assert "Traceback" not in err
    assert snapshot(root) == before and tree_dirs(root) == dirs
    assert "a folder" in status(root).yamls["models/yolov5s-nl.yaml"]


def test_unpatch_refuses_to_delete_an_edited_yaml(tmp_path, capsys):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    before = snapshot(root)
    patch(root)
    edited = root / "models" / "yolov5s-nl.yaml"
    edited.write_text(edited.read_text().replace("nc: 80", "nc: 3"))
    patched = snapshot(root)
    with pytest.raises(PatchError, match=r"models/yolov5s-nl\.yaml changed since .*keep_edited=True"):
        unpatch(root)
    assert snapshot(root) == patched
    rc, out, err = cli(capsys, "unpatch", str(root))
    assert rc == 2 and "would lose your edits" in err and snapshot(root) == patched
    rc, out, err = cli(capsys, "status", str(root))
    assert "models/yolov5s-nl.yaml: copied, edited since" in out
    rc, out, err = cli(capsys, "unpatch", str(root), "--keep-edited")
    assert rc == 0, err
    assert "kept your edited models/yolov5s-nl.yaml" in out
    after = snapshot(root)
    assert after.pop("models/yolov5s-nl.yaml") == edited.read_bytes()
    assert after == before


def test_unpatch_keeps_later_user_edits_of_yolo_py(tmp_path):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    original = (root / YOLO_PY).read_text()
    patch(root)
    with open(root / YOLO_PY, "a") as f:
        f.write("# my later edit\n")
    assert "edited since" in status(root).yolo_py
    res = unpatch(root)
    assert res.stripped
    assert (root / YOLO_PY).read_text() == original + "# my later edit\n"


def test_unpatch_and_status_work_after_parse_model_was_renamed(tmp_path):
    """Issue 14.5: a patched tree whose parse_model was renamed since was refused ("defines no parse_model()")."""
    root = write_tree(tmp_path / "clone", "yolov5-star")
    before = snapshot(root)
    patch(root)
    yolo = root / YOLO_PY
    renamed = yolo.read_text().replace("def parse_model(", "def build_layers(").replace("= parse_model(", "= build_layers(")
    yolo.write_text(renamed)
    st = status(root)
    assert st.patched and "edited since" in st.yolo_py and st.flavour == "yolov5"
    res = unpatch(root)
    assert res.stripped and res.was_patched
    after = snapshot(root)
    assert after.pop(YOLO_PY).decode() == unpatch_source(renamed)  # the marked lines are gone, the rename stays
    before.pop(YOLO_PY)
    assert after == before and not (root / STATE_DIR).exists()
    # without a record (git apply) it works from the markers alone
    root = write_tree(tmp_path / "clone2", "yolov5-star")
    patch(root)
    shutil.rmtree(root / STATE_DIR)
    (root / YOLO_PY).write_text((root / YOLO_PY).read_text().replace("def parse_model(", "def build_layers("))
    assert status(root).patched
    unpatch(root)
    assert MARKER not in (root / YOLO_PY).read_text()
    # a file that is neither patched nor has a parse_model is still refused
    with pytest.raises(PatchError, match="defines no parse_model"):
        status(root)


def test_tree_patched_with_git_apply_unpatches_without_state(tmp_path):
    """Users of the reference diffs have no .yolo-nonlocal/ record: unpatch removes marked lines and our YAMLs."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    for layout in ("yolov5-named", "yolov5-v5"):
        root = write_tree(tmp_path / layout, layout)
        before = snapshot(root)
        diff = patch(root, dry_run=True).diff
        subprocess.run(["git", "apply", "-"], input=diff, text=True, cwd=root, check=True)
        st = status(root)
        assert st.patched and st.manifest is None and "no backup" in st.yolo_py
        assert "patched without a .yolo-nonlocal/ record" in str(st)
        assert patch(root).already_patched  # recognises the patch as its own
        unpatch(root)
        assert snapshot(root) == before, layout


def test_status_output(tmp_path, capsys):
    root = write_tree(tmp_path / "clone", "yolov7")
    rc, out, err = cli(capsys, "status", str(root))
    assert rc == 0, err
    assert f"{root}: YOLOv7 tree" in out and "not patched" in out
    assert "cfg/training/yolov7-tiny-nl.yaml: absent" in out
    rc, out, err = cli(capsys, "patch", f"path={root}")  # Ultralytics-style key=value
    assert rc == 0, err
    assert "patched as yolov7" in out and "created  cfg/training/yolov7-nl.yaml" in out
    rc, out, err = cli(capsys, "status", str(root))
    assert "patched by yolo-nonlocal" in out
    assert "models/yolo.py: patched (NonLocal import + parse_model branch), unchanged since" in out
    assert "cfg/training/yolov7-nl.yaml: copied, unchanged" in out
    assert "NonLocal importable by this Python" in out
    rc, out, err = cli(capsys, "patch", str(root))
    assert rc == 0 and "already patched" in out
    rc, out, err = cli(capsys, "unpatch", str(root))
    assert rc == 0 and "restored models/yolo.py" in out


def test_status_names_a_patch_of_another_version(tmp_path):
    """A tree patched by an earlier package version (its branch passed ``[c2, *args]``, without the YAML keys)
    still builds, but status says the marked lines are not this version's, and patch refuses to stack."""
    root = write_tree(tmp_path / "clone", "yolov5-star")
    patch(root)
    assert "not this version's" not in status(root).yolo_py
    yolo = root / YOLO_PY
    older = yolo.read_text().replace("args = _yolo_nonlocal_row_args(c2, args, d)  # yolo-nonlocal: [c2, *args] + the YAML's nonlocal_init_* keys",
                                     "args = [c2, *args]  # yolo-nonlocal")
    assert older != yolo.read_text()
    yolo.write_text(older)
    st = status(root)
    assert "its marked lines are not this version's" in st.yolo_py and "unpatch, then patch again" in st.yolo_py
    with pytest.raises(PatchError, match="run `yolo-nonlocal yolov5 unpatch path=PATH` first"):
        patch(root)
    unpatch(root)
    patch(root)
    assert "not this version's" not in status(root).yolo_py


def test_flavour_option(tmp_path, capsys):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    res = patch(root, flavour="yolov7", dry_run=True)  # a YOLOv5 tree has no IDetect: no YOLOv7 YAML builds there
    assert res.flavour == "yolov7" and res.changed == (YOLO_PY,)
    assert res.notes == tuple(f"{d}: not copied: it uses IDetect, which this tree does not define" for _, d in YAMLS["yolov7"])
    yolo = root / YOLO_PY  # a tree on YOLOv5's code base with YOLOv7's layers (YOLOv7 u5 has cfg/training/ too)
    yolo.write_text(yolo.read_text().replace("\n\ndef make_divisible", "\n\nclass IDetect:\n    pass\n\n\ndef make_divisible"))
    res = patch(root, flavour="yolov7", dry_run=True)
    assert "cfg/training/yolov7-nl.yaml" in res.changed and not res.notes
    with pytest.raises(PatchError, match="unknown flavour 'yolov8'"):
        patch(root, flavour="yolov8")
    rc, out, err = cli(capsys, "patch", str(root), "--flavour", "yolov8")
    assert rc == 2 and "flavour='yolov8' is not one of: yolov5, yolov7" in err


def test_yamls_that_cannot_build_are_skipped_with_a_note(tmp_path, capsys):
    """Issue 14.6: a v5.x tree got -nl YAMLs naming SPPF (NameError there); an SPP tree gets the SPP variant,
    a tree lacking another layer gets the YAML not at all, and patch and status say so."""
    root = write_tree(tmp_path / "v5", "yolov5-v5")
    res = patch(root)
    assert all("SPP variant" in n for n in res.notes) and len(res.notes) == 5
    for _, dst in YAMLS["yolov5"]:
        text = (root / dst).read_text()
        assert "SPPF" not in yaml_modules(text) and "SPP, [1024, [5, 9, 13]]" in text
    assert all("SPP variant" in s for s in status(root).yamls.values())
    unpatch(root)

    root = write_tree(tmp_path / "old", "yolov5-star")
    common = root / "models" / "common.py"
    common.write_text(common.read_text().replace("class C3(Conv)", "class BottleneckCSP(Conv)"))
    rc, out, err = cli(capsys, "yolov5", "patch", str(root))
    assert rc == 0, err
    assert "models/yolov5s-nl.yaml: not copied: it uses C3, which this tree does not define" in out
    assert not list((root / "models").glob("*-nl.yaml"))
    assert "not copied: it uses C3" in status(root).yamls["models/yolov5n-nl.yaml"]
    assert unpatch(root).restored == (YOLO_PY,)

    root = write_tree(tmp_path / "u6", "yolov5-star")  # YOLOv7 u6: anchor-free V6Detect heads
    yolo = root / YOLO_PY
    yolo.write_text(yolo.read_text().replace("\n\ndef make_divisible", "\n\nclass IV6Detect:\n    pass\n\n\ndef make_divisible"))
    res = patch(root)
    assert res.changed == (YOLO_PY,) and all("anchor-free" in n for n in res.notes)
