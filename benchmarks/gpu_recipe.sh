#!/usr/bin/env bash
# The default model's recipe on a GPU in one command (issue 17 item 4): every stage of
# configs/recipes/default-model-gpu.yaml, the fp16 export, the compositional and VAE scores, and a record of
# each stage's seconds, all under OUT (copy OUT back; the model is OUT/run/default-model, its inpainting
# variant OUT/run/default-inpaint-model with its inpainting check in OUT/eval-default-inpaint-model).
#
#   PROBE=1 bash benchmarks/gpu_recipe.sh OUT   # first: 40 steps of every stage, to time them (~2 min)
#   bash benchmarks/gpu_recipe.sh OUT           # then the whole recipe (the same command resumes it)
#
# Environment: RECIPE (default default-model-gpu; the CPU test runs `smoke`), PROBE, PROBE_STEPS (steps per stage
# in probe mode, default 40), EVAL_PROMPTS (prompts
# per category and seed, default 10), EVAL_VAE_IMAGES (default 512), EVAL_ARGS (extra `latentforge eval` flags, e.g. --device cpu).
set -euo pipefail
out="${1:?usage: bash benchmarks/gpu_recipe.sh OUT}"
recipe="${RECIPE:-default-model-gpu}"
mkdir -p "$out"
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), \
torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')" | tee "$out/device.txt"
recipe_names() {  # the recipe's stage names (stages) or export folders (export), in order
  python - "$recipe" "$1" <<'PY'
import sys
from latentforge.resources import config_file
from latentforge.training.recipe import load_recipe
recipe = load_recipe(config_file("recipes", sys.argv[1]), [])
print(" ".join(s.name for s in recipe.stages) if sys.argv[2] == "stages" else " ".join(e.to for e in recipe.export))
PY
}
overrides=()
if [[ "${PROBE:-0}" == 1 ]]; then
  steps="${PROBE_STEPS:-40}"
  for stage in $(recipe_names stages); do overrides+=("$stage.optim.max_steps=$steps" "$stage.checkpoint.every_steps=0"); done
fi
start=$(date +%s)
latentforge train recipe --config "$recipe" -o "$out/run" "${overrides[@]}" 2>&1 | tee "$out/recipe.log" \
  | grep -v "it/s"
echo "recipe: $(( $(date +%s) - start )) s in all" | tee -a "$out/recipe.log"
python - "$out/run/.stages" <<'PY' | tee "$out/stage_seconds.txt"
import json, pathlib, sys
for marker in sorted(pathlib.Path(sys.argv[1]).glob("*.done"), key=lambda p: p.stat().st_mtime):
    print(f"{marker.stem:>16}: {json.loads(marker.read_text())['seconds']:8.1f} s")
PY
# the recipe's exports: the text-to-image model first, then (default-model, smoke) the inpainting variant
read -r -a exports <<< "$(recipe_names export)"
model="$out/run/${exports[0]}"
n="${EVAL_PROMPTS:-10}"
for seed in 0 1; do
  latentforge eval compositional --model "$model" --seed "$seed" --num-prompts "$n" --images-per-prompt 2 \
    -o "$out/eval-compositional-seed$seed" --overwrite ${EVAL_ARGS:-} 2>&1 | grep "overall"
done
latentforge eval vae --model "$model" --num-images "${EVAL_VAE_IMAGES:-512}" -o "$out/eval-vae" --overwrite ${EVAL_ARGS:-} 2>&1 \
  | grep -E "objects_kept|psnr"
for inpaint in "${exports[@]:1}"; do
  latentforge eval inpainting --model "$out/run/$inpaint" --num-prompts "$(( n * 6 ))" -o "$out/eval-$inpaint" \
    --overwrite ${EVAL_ARGS:-} 2>&1 | grep "inpainting"
done
