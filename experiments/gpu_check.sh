#!/usr/bin/env bash
# One-call GPU check of gpunet (issue 9, item 8): what the device tool runs on a fresh GPU machine.
#
#   bash experiments/gpu_wheels.sh                      # here, once: .gpu_wheels/ (hydra-core, omegaconf, antlr4)
#   device tool: run  command="bash experiments/gpu_check.sh"  carry=[".gpu_wheels"]  timeout_s=540
#   GPU_CHECK_DEVICE=cpu bash experiments/gpu_check.sh  # the CPU dry run (tiny settings, no GPU figures)
#
# Installs the carried wheels offline into a private folder (the machine reaches no registry and
# lacks hydra-core, omegaconf and antlr4-python3-runtime), puts this working tree first on
# PYTHONPATH (no build step, nothing installed into the machine's environment), then runs
# experiments/gpu_check.py: every step in its own process with its own timeout, within
# GPU_CHECK_BUDGET_S (default 450 s) counted from this script's start. Results go to $OUT when set
# (the device tool brings that folder back), else outputs/gpu_check/out.
set -uo pipefail
cd "$(dirname "$0")/.."
START=$(date +%s)
PY=${PYTHON:-python3}
MODE=${GPU_CHECK_DEVICE:-cuda}
BUDGET=${GPU_CHECK_BUDGET_S:-450}
WHEELS=${GPU_WHEELS_DIR:-.gpu_wheels}
SITE=${GPU_CHECK_SITE:-/tmp/gpu_check_site}
export PYTHONUNBUFFERED=1

if ! "$PY" -c "import hydra, omegaconf" 2>/dev/null; then
    if compgen -G "$WHEELS/*.whl" >/dev/null; then
        echo "[gpu_check] installing $(ls "$WHEELS"/*.whl | xargs -n1 basename | tr '\n' ' ')offline into $SITE"
        "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --disable-pip-version-check \
            --upgrade --target "$SITE" "$WHEELS"/*.whl \
            || echo "[gpu_check] installing the wheels failed; the steps that need hydra will fail" >&2
        export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
    else
        echo "[gpu_check] hydra-core/omegaconf are missing and no $WHEELS/*.whl was carried:" \
             "run 'bash experiments/gpu_wheels.sh' here and pass carry=[\"$WHEELS\"]" >&2
    fi
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
"$PY" -c "import hydra, omegaconf, gpunet; print('[gpu_check] gpunet from', gpunet.__file__)" \
    || echo "[gpu_check] gpunet does not import; the steps will say why" >&2

LEFT=$(( BUDGET - ($(date +%s) - START) ))
"$PY" experiments/gpu_check.py --device "$MODE" --budget "$LEFT" "$@"
