#!/usr/bin/env bash
# One prepared GPU check of pfbench (<= 12 minutes on one H100/H200; ONLY="..." runs some steps, e.g. in two
# device calls of <= 10 minutes: ONLY="pytest_gpu sampling training training_checkpointing fid_cell", then
# ONLY="rehearsal_tf32 rehearsal_bf16"): installs what the GPU image lacks from carried wheels, runs
# `pytest -m gpu`, the three benchmarks of issue 12 and the ImageNet rehearsal, and writes ONE JSON:
#   sampling  PF euler_pf (dedup) vs SiT euler img/s at equal NFE, B/2 and XL/2, batch 256 (target >= 0.97x)
#   training  PF/SiT training img/s, MFU, peak memory at the paper's 32 samples per GPU, bf16, compiled
#             (target >= 1.3x the reference's 1,843 / 397 img/s; MFU >= 45 % for XL/2), plus XL/2 with
#             activation checkpointing (memory)
#   fid_cell  a FID cell's time vs its forward-pass lower bound (sampling + VAE decode + Inception; <= 1.15x)
#   rehearsal_tf32, rehearsal_bf16  suites/imagenet.yaml itself through `pfbench run` (benchmarks/rehearsal.py:
#             stand-in files at real shapes, B/2, all three PF samplers, 2,048 samples, FID/sFID/IS/P/R, the
#             report), fp32 + TF32 at the reference's batch 64 and bf16 at batch 256: img/s of sampling (per cell
#             and per call), SD-VAE decoding and Inception, and the projected minutes of one FID-50K cell at
#             the authors' 100 steps for each sampler
#
# Usage (repository root):  benchmarks/gpu_check.sh [OUT_DIR]      -> OUT_DIR/gpu_check.json (default: $OUT or
#                                                                      reports/gpu_check)
#           SMOKE=1 benchmarks/gpu_check.sh [OUT_DIR]              -> the same steps on CPU at tiny sizes: a
#                                                                      PLUMBING CHECK of this script, no GPU figure
# Wheels: the GPU image has torch, timm, pandas, pyarrow, rich, typer, ... but not these. Fill the gitignored
# .whl/ folder once, on a machine with pip access (Python 3.12, x86-64), and carry it to the GPU machine:
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#     --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#     -d .whl torch-fidelity clean-fid open-clip-torch ftfy wcwidth hydra-core omegaconf \
#     antlr4-python3-runtime diffusers submitit
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-reports/gpu_check}}
mkdir -p "$OUT_DIR/parts"
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if compgen -G ".whl/*.whl" >/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH="$PYTHONPATH:/tmp/site" || echo "wheel install failed" >&2
fi
P="$OUT_DIR/parts"
if [[ "${SMOKE:-0}" == 1 ]]; then  # CPU, tiny sizes, fp32, uncompiled: proves the plumbing only
  SAMPLING=(gpu-throughput presets=cpu-xs batch=4 nfe=2)
  TRAIN=(train-throughput presets=cpu-xs batch=4 steps=2 compile=false device=cpu)
  TRAIN_CKPT=(train-throughput presets=cpu-xs kinds=pf batch=4 steps=2 compile=false checkpointing=true device=cpu)
  CELL=(fid-cell preset=cpu-xs vae=false n=16 batch=8 nfe=2 precision=fp32 device=cpu)
  # real shapes even here (the suite's B/2 and SD-VAE): 2 samples, FID only, euler_pf at 1 step; no bf16 on CPU
  REHEARSAL_TF32=(--device cpu --precision fp32 --samples 2 --batch 2 --steps 1 --nfe 4 --smoke)
  REHEARSAL_BF16=()
  export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
else
  SAMPLING=(gpu-throughput presets=B/2,XL/2 batch=256 nfe=8 compile=true repeats=3)
  TRAIN=(train-throughput presets=B/2,XL/2 batch=32 steps=10 compile=true)
  TRAIN_CKPT=(train-throughput presets=XL/2 kinds=pf batch=32 steps=3 compile=false checkpointing=true)
  CELL=(fid-cell preset=XL/2 sampler=euler_pf nfe=50 n=1024 batch=256 precision=bf16 compile=true)
  REHEARSAL_TF32=(--precision tf32 --samples 2048 --batch 64 --steps 4 --nfe 8)
  REHEARSAL_BF16=(--precision bf16 --samples 2048 --batch 256 --steps 4 --nfe 8)
fi
step() {  # name, time limit in seconds, command...: runs it, keeps its exit status and log tail
  local name=$1 limit=$2; shift 2
  if [[ -n "${ONLY:-}" && " $ONLY " != *" $name "* ]]; then return; fi
  local began=$SECONDS
  timeout "$limit" "$@" >"$P/$name.log" 2>&1
  echo "{\"rc\": $?, \"seconds\": $((SECONDS - began))}" >"$P/$name.status"
  tail -n 25 "$P/$name.log"
}
step pytest_gpu 100 python3 -m pytest -m gpu -q -p no:cacheprovider tests/test_gpu.py
step sampling 120 python3 benchmarks/run.py "${SAMPLING[@]}" --json "$P/sampling.json"
step training 150 python3 benchmarks/run.py "${TRAIN[@]}" --json "$P/training.json"
step training_checkpointing 60 python3 benchmarks/run.py "${TRAIN_CKPT[@]}" --json "$P/training_checkpointing.json"
step fid_cell 90 python3 benchmarks/run.py "${CELL[@]}" --json "$P/fid_cell.json"
step rehearsal_tf32 150 python3 benchmarks/rehearsal.py "${REHEARSAL_TF32[@]}" --json "$P/rehearsal_tf32.json"
if [[ ${#REHEARSAL_BF16[@]} -gt 0 ]]; then
  step rehearsal_bf16 120 python3 benchmarks/rehearsal.py "${REHEARSAL_BF16[@]}" --json "$P/rehearsal_bf16.json"
fi
python3 - "$OUT_DIR" "${SMOKE:-0}" <<'EOF'
import json, subprocess, sys, time
from pathlib import Path
out, smoke = Path(sys.argv[1]), sys.argv[2] == "1"
parts = out / "parts"
names = ["pytest_gpu", "sampling", "training", "training_checkpointing", "fid_cell", "rehearsal_tf32", "rehearsal_bf16"]
result = {"what": "pfbench GPU check (issue 12)", "plumbing_check_only": smoke,
          "note": "SMOKE=1: CPU at tiny sizes; proves the script's plumbing, NOT a GPU figure" if smoke else "",
          "written": time.strftime("%Y-%m-%d %H:%M:%S")}
try:
    result["nvidia_smi"] = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                                           "--format=csv,noheader"], capture_output=True, text=True,
                                          timeout=20).stdout.strip() or None
except (OSError, subprocess.SubprocessError):
    result["nvidia_smi"] = None
for name in names:
    status = parts / f"{name}.status"
    entry = json.loads(status.read_text()) if status.is_file() else {"rc": None}
    data = parts / f"{name}.json"
    if data.is_file():
        entry["result"] = json.loads(data.read_text())
    log = parts / f"{name}.log"
    if name == "pytest_gpu" and log.is_file():
        lines = [ln for ln in log.read_text().splitlines() if ln.strip()]
        entry["summary"] = lines[-1] if lines else ""
    result[name] = entry
(out / "gpu_check.json").write_text(json.dumps(result, indent=1, sort_keys=True))
print(f"wrote {out / 'gpu_check.json'}")
EOF
