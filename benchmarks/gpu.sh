#!/usr/bin/env bash
# The GPU benchmark in one command (issue 20 item 5): Stable-Diffusion-1.5-shaped random weights, 512x512,
# 50 steps, float16, batch 1 and 4, diffusers' StableDiffusionPipeline and ours side by side, in the modes
# exact (PyTorch SDPA), xformers, torch.compile + channels-last and step caching (interval 3). Prints one
# table (s/image, it/s via images/s, peak memory, pixel difference from our exact path) and writes it as JSON.
#
#   bash benchmarks/gpu.sh [OUTPUT.json]
#
# Environment overrides (the CPU smoke test runs it tiny): ARCH SIZE STEPS BATCHES DEVICE DTYPE MODES REPEATS.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-gpu_benchmark.json}"
python "$here/generate_speed.py" \
  --architecture "${ARCH:-sd15}" --size "${SIZE:-512}" --steps "${STEPS:-50}" \
  --batch ${BATCHES:-1 4} --device "${DEVICE:-cuda}" --dtype "${DTYPE:-float16}" \
  --modes ${MODES:-exact xformers compile+channels-last step-cache-3} \
  --repeats "${REPEATS:-2}" --json "$out"
python - "$out" <<'PY'
import json, sys
rows = json.load(open(sys.argv[1]))["rows"]
print(f"{len(rows)} rows written to {sys.argv[1]}; failed: {[r['mode'] for r in rows if 'error' in r] or 'none'}")
PY
