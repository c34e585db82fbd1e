# Entry points used by README.md and .ci/run.
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: venv demo test test-slow lint

venv: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	# torch/torchvision first: both come from this machine's local wheel store (see DESIGN.md)
	$(PY) -m pip install --quiet torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install --quiet -e '.[train,export,dicom,video,sign,dev]'
	touch $@

demo: venv
	$(VENV)/bin/pocus demo

test: venv
	$(PY) -m pytest -q
	$(MAKE) -C android_demo test PY=../$(PY)

test-slow: venv
	$(PY) -m pytest -q -m slow

lint: venv
	$(VENV)/bin/ruff check pocus_edge tests benchmarks
	$(VENV)/bin/mypy --ignore-missing-imports --follow-imports=silent pocus_edge/runtime pocus_edge/export/bundle.py \
	  pocus_edge/cli_common.py pocus_edge/task_names.py
