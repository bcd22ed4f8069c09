# One command runs the main job (make demo), one passes the tests (make test); both install first.
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
# Where torch comes from. A plain `pip install torch` on Linux resolves to the CUDA build (several GB), so
# PyTorch's CPU-only index is added for it (a wheel of a few hundred MB, preferred: its 2.13.0+cpu sorts
# above 2.13.0). Where that index cannot be reached (a machine that sees only a package mirror), pip warns
# and takes torch from the default index. TORCH_INDEX= (empty) uses the default index only.
TORCH_PIN   := torch==2.13.0
TORCH_INDEX ?= https://download.pytorch.org/whl/cpu
TORCH_FROM  := $(if $(strip $(TORCH_INDEX)),--timeout 20 --retries 1 --extra-index-url $(TORCH_INDEX))

.PHONY: install test test-kernels demo lint bench gpu-wheels clean

install: $(STAMP)

# torch first, pinned, so pip never resolves a multi-GB CUDA build for the other packages.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_FROM) $(TORCH_PIN)
	$(PY) -m pip install --quiet -e '.[dev,cluster]'
	# RIFE parity reference; --no-deps: its declared deps (torchvision, opencv) are not needed for the model code.
	$(PY) -m pip install --quiet --no-deps ccvfi==0.0.3
	touch $(STAMP)

test: install
	$(PY) -m pytest -q

# The numeric tests (marker `numeric`) once more on other CPU kernels, those an AVX2-only x86-64 CPU gets: what is
# bit for bit on one CPU may differ in the last bits on the next, so a tolerance must hold on both (~3 min).
KERNELS ?= ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_CBWR=AVX2
test-kernels: install
	env $(KERNELS) $(PY) -m pytest -q -m numeric

# The tiny trained model that ships with telefuser: two prompts, each a video (16 -> 32 fps with RIFE)
# and a PNG strip of its frames beside it.
demo: install
	$(VENV)/bin/telefuser generate recipe=tiny prompt="a red ball moving right" seed=7 \
		pipeline.enable_vfi=true user.target_fps=32 output.frame_strip=true output.overwrite=true \
		hydra.run.dir=outputs/demo/red_ball
	$(VENV)/bin/telefuser generate recipe=tiny prompt="a yellow square moving down" seed=7 \
		pipeline.enable_vfi=true user.target_fps=32 output.frame_strip=true output.overwrite=true \
		hydra.run.dir=outputs/demo/yellow_square
	@echo "videos and frame strips: outputs/demo/red_ball/ outputs/demo/yellow_square/"

lint: install
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

bench: install
	$(PY) benchmarks/run_all.py

# What benchmarks/gpu_check.sh installs on a CUDA machine that has torch but cannot download: the pure-Python
# dependencies, pinned to the versions tested here (antlr4 4.9.3 exists only as a source archive). imageio-ffmpeg
# as its source archive too: the wheel bundles a 68 MB ffmpeg, over what a device call carries, so the
# machine's own ffmpeg (or IMAGEIO_FFMPEG_EXE) writes the videos there.
gpu-wheels: install
	$(PY) -m pip download --quiet --no-deps -d .wheels hydra-core==1.3.8 omegaconf==2.3.1 \
		antlr4-python3-runtime==4.9.3 ftfy==6.3.1 wcwidth==0.9.4 diffusers==0.42.1 importlib_metadata==10.2.0
	$(PY) -m pip download --quiet --no-deps --no-binary imageio-ffmpeg -d .wheels imageio-ffmpeg==0.8.1

clean:
	rm -rf $(VENV) outputs multirun dist build
