#!/usr/bin/env bash
# Wheels of what gpunet needs and the GPU machine lacks, for experiments/gpu_check.sh.
#
# The lent GPU machine (Python 3.12, torch, timm, lightning, torchmetrics, botorch, onnx,
# onnxruntime, onnxscript, matplotlib, scikit-learn, scipy, pyyaml, tqdm, pytest, hypothesis
# preinstalled) reaches no registry. gpunet imports hydra and omegaconf at the top of its apps
# and tests (wandb only inside functions, when logger=wandb), so those travel as wheels, all
# pure Python. antlr4-python3-runtime 4.9.3 (omegaconf's parser) exists only as an sdist: it is
# built into a py3-none-any wheel here.
#
#   bash experiments/gpu_wheels.sh            # -> .gpu_wheels/ (git-ignored), then carry it
#
# The versions are those the test suite passes with on the development machine.
set -euo pipefail
cd "$(dirname "$0")/.."
DEST=${GPU_WHEELS_DIR:-.gpu_wheels}
PY=${PYTHON:-python3}
PURE=("hydra-core==1.3.8" "omegaconf==2.3.1")
SDIST_ONLY=("antlr4-python3-runtime==4.9.3")

rm -rf "$DEST" && mkdir -p "$DEST"
# Pure-Python wheels for the target interpreter (py3-none-any matches any platform tag).
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux2014_x86_64 -d "$DEST" "${PURE[@]}"
# sdist-only pure-Python packages: build the wheel here (no compiled code, so it runs there).
"$PY" -m pip wheel -q --no-deps -w "$DEST" "${SDIST_ONLY[@]}"

for whl in "$DEST"/*.whl; do
    case "$whl" in *-py3-none-any.whl|*-py2.py3-none-any.whl) ;;
        *) echo "gpu_wheels: $whl is not a pure-Python wheel; it may not install there" >&2 ;; esac
done
ls -l "$DEST"
du -sh "$DEST"
