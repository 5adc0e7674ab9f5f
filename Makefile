# Two commands set everything up on a fresh machine:
#   make demo   create .venv, install the package, run the main job on the built-in synthetic dataset
#   make test   create .venv, install the package with its test extra, run the test suite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.yolo-nonlocal-installed
TEST_STAMP := $(VENV)/.yolo-nonlocal-test-installed
# Tests and the demo never reach the internet and keep Ultralytics' settings out of the user's home.
export YOLO_OFFLINE := 1
export YOLO_CONFIG_DIR ?= $(CURDIR)/.venv/yolo-config
export MPLBACKEND := Agg

.PHONY: install install-test demo test test-fast bench bench-small-objects gpu-wheels clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade pip

# Re-install when the packaging metadata changes; the install is editable, so code edits need none.
# The demo needs the package only; the suite also needs the test extra and the side releases below.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install -e .
	touch $(STAMP)

$(TEST_STAMP): $(STAMP)
	$(BIN)/python -m pip install -e ".[test]"
	# the oldest supported Ultralytics releases, beside the venv, for tests/integrations/ultralytics/test_ultralytics_oldest.py
	$(BIN)/python -m pip install --no-deps --target $(VENV)/ultralytics-oldest "ultralytics==8.3.0" tqdm py-cpuinfo
	$(BIN)/python -m pip install --no-deps --target $(VENV)/ultralytics-8.4.0 "ultralytics==8.4.0"
	touch $(TEST_STAMP)

install: $(STAMP)

install-test: $(TEST_STAMP)

UPSTREAM       := $(VENV)/upstream
UPSTREAM_STAMP := $(UPSTREAM)/.installed
# Upstream YOLOv5/YOLOv7 code for tests/integrations/yolov5/test_yolov5_upstream.py, outside site-packages and without dependencies,
# so the venv's torch, numpy and ultralytics stay as they are; plus what those trees import that the venv lacks.
$(UPSTREAM_STAMP): | $(BIN)/python
	$(BIN)/python -m pip install --no-deps --target $(UPSTREAM)/yolov5 yolov5==7.0.14
	$(BIN)/python -m pip install --no-deps --target $(UPSTREAM)/yolov5-6.2 yolov5==6.2.3
	$(BIN)/python -m pip install --no-deps --target $(UPSTREAM)/yolov7detect yolov7detect==1.0.1
	$(BIN)/python -m pip install --no-deps --target $(UPSTREAM)/deps pandas==3.1.1 python-dateutil==4.0.0 pytz==2026.6 tzdata==2026.6 six==1.17.0 tqdm==4.70.1 seaborn==0.13.2 scipy==1.17.1 "setuptools<81" tensorboard==2.21.0 absl-py==2.5.1
	touch $@

demo: install
	$(BIN)/yolo-nonlocal demo

# pytest exits 5 when it collects no test: that is a failure here, not a success.
test: install-test $(UPSTREAM_STAMP)
	$(BIN)/pytest

test-fast: install-test $(UPSTREAM_STAMP)
	$(BIN)/pytest -m "not slow"

bench: install-test
	$(BIN)/python benchmarks/block.py
	$(BIN)/python benchmarks/coco_eval.py --images 500
	$(BIN)/python benchmarks/gflops.py

# the small-object evidence protocol on the positive control: 3 seeds, each a 30-epoch baseline and three
# 15-epoch fine-tunes, about half an hour a seed on one core of docs/speed.md's AVX2 machine; --jobs 2 trains
# two seeds at once on a 2-core CPU, where Ultralytics trains on one thread; minutes on a GPU. See docs/compare.md. The other tasks: --tasks farcue-near,neutral,context
bench-small-objects: install
	$(BIN)/python benchmarks/small_objects.py --preset quick --tasks farcue --arms baseline,nl-g0-r,nl --jobs 2

# Wheels for benchmarks/gpu_evidence.sh on a lent GPU machine (Python 3.12, no Ultralytics, no registry):
# this venv's Ultralytics release, its thop and faster-coco-eval, into .whl/ (git-ignored), to carry there.
gpu-wheels: install
	rm -rf .whl
	$(BIN)/python -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
	    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d .whl \
	    "ultralytics==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("ultralytics"))')" \
	    "ultralytics-thop==$$($(BIN)/python -c 'import importlib.metadata as m; print(m.version("ultralytics-thop"))')" \
	    faster-coco-eval

clean:
	rm -rf $(VENV) build dist *.egg-info .pytest_cache
