"""Tests of yolo_nonlocal.integrations.yolov5.hazards on trees holding the upstream patterns (test-written lines).

Each pattern is the one line of the upstream file the note is about, written here (not copied): the
tests check that the note appears exactly where this Python's torch / numpy / Pillow would fail on it,
that none suggests a downgrade into this environment, and that the torch.load note honours
TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD as torch reads it.
"""

from __future__ import annotations

from importlib import metadata
from pathlib import Path

import pytest
from yolov5_trees import cli, write_tree

from yolo_nonlocal.integrations.yolov5.hazards import OWN_ENVIRONMENT, hazards

LOSS = '''def build_targets(p, targets, anchors):
    gain = torch.ones(7, device=targets.device)  # normalized to gridspace gain
    for i in range(3):
        indices.append((b, a, gj.clamp_(0, gain[3] - 1), gi.clamp_(0, gain[2] - 1)))
'''
FILES = {
    "utils/metrics.py": "def compute_ap(recall, precision):\n    return np.trapz(np.interp(x, mrec, mpre), x)\n",
    "utils/dataloaders.py": "bi = np.floor(np.arange(n) / batch_size).astype(np.int)\n"
                            "def load(cache_path):\n    return torch.load(cache_path), True\n",
    "utils/loss.py": LOSS,
    "utils/plots.py": "def box_label(self, label):\n    w, h = self.font.getsize(label)\n",
    "models/experimental.py": "def attempt_load(w):\n    ckpt = torch.load(w, map_location='cpu')\n",
    "utils/general.py": "AUTOINSTALL = str(os.getenv('YOLOv5_AUTOINSTALL', True)).lower() == 'true'\n"
                        "def check_requirements(requirements):\n    check_output(f'pip install {s}', shell=True)\n",
    "hubconf.py": "check_requirements(ROOT / 'requirements.txt')\n",
}


def _tree(tmp_path: Path, **skip: bool) -> Path:
    root = write_tree(tmp_path / "clone", "yolov5-star")
    for rel, text in FILES.items():
        if not skip.get(Path(rel).stem):
            (root / rel).write_text(text)
    return root


def _major(dist: str) -> tuple[int, int]:
    return tuple(int(x) for x in metadata.version(dist).split(".")[:2])


def _torch_refuses() -> bool:
    import torch

    try:
        torch.zeros(2, dtype=torch.long).clamp_(0, torch.ones(7)[3] - 1)
    except RuntimeError:
        return True
    return False


def test_each_pattern_gives_its_note_with_a_fix_that_keeps_this_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", raising=False)
    notes = hazards(_tree(tmp_path))
    text = "\n".join(notes)
    assert ("np.trapz" in text) == (_major("numpy") >= (2, 0))
    assert ("utils/dataloaders.py use np.int" in text) == (_major("numpy") >= (1, 24))
    assert ("build_targets" in text) == _torch_refuses()  # asked of this torch, as the note says
    assert ("font.getsize" in text) == (_major("pillow") >= (10, 0))
    assert "reads its label caches" in text and "UnpicklingError" in text
    assert ("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1" in text) == (_major("torch") >= (2, 6))
    assert "Set YOLOv5_AUTOINSTALL=False" in text and "torch.hub.load through hubconf.py" in text
    # issue 14.4: the old advice `pip install "numpy<1.24"` broke this environment; no note suggests a downgrade
    assert "pip install \"numpy" not in text and "numpy<" not in text.replace("numpy<1.24 then break", "")
    if any("own environment (last note)" in n for n in notes):
        assert notes[-1] == OWN_ENVIRONMENT


def test_a_tree_without_the_patterns_has_no_version_notes(tmp_path):
    root = write_tree(tmp_path / "clone", "yolov5-star")
    assert hazards(root) == []


def test_the_requirement_check_without_a_switch(tmp_path):
    root = _tree(tmp_path)
    (root / "utils" / "general.py").write_text(FILES["utils/general.py"].split("\n", 1)[1])
    (root / "hubconf.py").unlink()
    text = "\n".join(hazards(root))
    assert "It has no switch: run such a tree in its own environment" in text and "hubconf" not in text


@pytest.mark.parametrize("value, shown", [("1", False), ("true", False), ("YES", False), ("0", True), ("on", True)])
def test_torch_load_note_follows_the_variable_as_torch_reads_it(tmp_path, monkeypatch, capsys, value, shown):
    """Issue 14.8: the note still printed with TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1 set ("on" torch ignores)."""
    if _major("torch") < (2, 6):
        pytest.skip("torch < 2.6 loads full pickles by default")
    root = _tree(tmp_path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", value)
    assert any("calls torch.load without weights_only" in n for n in hazards(root)) == shown
    rc, out, err = cli(capsys, "yolov5", "status", str(root))
    assert rc == 0 and ("calls torch.load without weights_only" in out) == shown
