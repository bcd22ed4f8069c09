#!/usr/bin/env bash
# The GPU checks in one call, for a CUDA machine whose python3 already holds torch (it cannot download).
#
#   make gpu-wheels                       # here: the pure-Python dependencies as wheels, into .wheels/
#   bash benchmarks/gpu_check.sh          # there, with .wheels carried; logs go to $OUT
#
# Runs tests/gpu (CUDA generation == CPU to round-off, offload modes, bf16) and the CUDA-only offload test,
# then the DiT and VAE benchmarks on the device, each against diffusers on the same weights. Each part
# writes its own log, so a run stopped by a time limit still returns what finished.
set -uo pipefail
OUT=${OUT:-$PWD/gpu_check_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1
PY=${PY:-python3}

{ nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda)"
  command -v ffmpeg || echo "no ffmpeg on PATH: set IMAGEIO_FFMPEG_EXE for the tests that write videos"
} >"$OUT/machine.txt" 2>&1
$PY -m pip install --quiet --no-index --no-build-isolation --find-links .wheels hydra-core omegaconf \
    antlr4-python3-runtime imageio-ffmpeg ftfy wcwidth diffusers importlib_metadata >"$OUT/install.log" 2>&1 \
    || { cat "$OUT/install.log"; exit 1; }

$PY -m pytest -q -p no:cacheprovider tests/gpu tests/unit/test_offload.py 2>&1 | tee "$OUT/tests.log"
# DiT: 1.3B, 1,950 tokens, bf16: the raw forward, a step as the pipeline runs it, and a guided step.
$PY benchmarks/wan_dit_step.py --device cuda --repeats 5 2>&1 | tee "$OUT/dit_forward.log"
$PY benchmarks/wan_dit_step.py --device cuda --repeats 5 --prepared 2>&1 | tee "$OUT/dit_prepared.log"
$PY benchmarks/wan_dit_step.py --device cuda --repeats 5 --prepared --cfg batched 2>&1 | tee "$OUT/dit_cfg.log"
# VAE: (1,16,5,30,52) in fp32 and bf16, then 480p 81 frames (1,16,21,60,104) untiled.
$PY benchmarks/wan_vae_decode.py --device cuda 2>&1 | tee "$OUT/vae_fp32.log"
$PY benchmarks/wan_vae_decode.py --device cuda --dtype bf16 2>&1 | tee "$OUT/vae_bf16.log"
$PY benchmarks/wan_vae_decode.py --device cuda --frames 21 --height 60 --width 104 2>&1 | tee "$OUT/vae_480p81.log"
