# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install the package, run the main job on the built-in synthetic dataset
#   make test   create .venv, install the package with its test extra, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.yolo-nonlocal-installed
# Tests and the demo never reach the internet and keep Ultralytics' settings out of the user's home.
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR ?= $(CURDIR)/.venv/yolo-config
export MPLBACKEND := Agg

.PHONY: install demo test test-fast bench clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Re-install when the packaging metadata changes; the install is editable, so code edits need none.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e ".[test]"
	touch $(STAMP)

install: $(STAMP)

demo: install
	$(BIN)/python -m yolo_nonlocal.demo

# pytest exits 5 when it collects no test: that is a failure here, not a success.
test: install
	$(BIN)/pytest

test-fast: install
	$(BIN)/pytest -m "not slow"

bench: install
	$(BIN)/python benchmarks/block.py
	$(BIN)/python benchmarks/coco_eval.py --images 500

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
