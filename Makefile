# One command runs the main job (make demo), one passes the tests (make test); both install first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install test demo lint bench clean

install: $(STAMP)

# torch first, pinned, so pip never resolves a multi-GB CUDA build for the other packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet torch==2.13.0
	$(PY) -m pip install --quiet -e '.[dev,cluster]'
	# RIFE parity reference; --no-deps: its declared deps (torchvision, opencv) are not needed for the model code.
	$(PY) -m pip install --quiet --no-deps ccvfi==0.0.3
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

demo: install
	$(VENV)/bin/telefuser generate recipe=tiny prompt="a red ball moving right" seed=7 \
		pipeline.enable_vfi=true user.target_fps=32 hydra.run.dir=outputs/demo

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/run_all.py

clean:
	rm -rf $(VENV) outputs multirun dist build
