#!/usr/bin/env bash
# Does the memory help? The fair test of issue 7's last acceptance point (docs/alignment.md).
#
# Two arms aligned with the same recipe (data, seed, steps, LoRA, learning rate), differing only in μ:
#   titan    code-llama-19m titanized with --operator $OPERATOR --window 128 --mag-weight $MU
#   control  the same with --mag-weight 0: the window alone, the linear branch switched off
# then `titan perplexity` on held-out long files (left out of training) for
#   window          the control package before alignment (the base restricted to the window)
#   titan-before    the Titan package before alignment
#   titan-aligned   the Titan arm after alignment
#   control-aligned the control arm after alignment
#   titan-aligned-mu0  the Titan arm's adapter with μ set to 0 (ablation: its weights without the memory)
# and a table of token-weighted NLL per position bucket (scripts/memory-helps-table.mjs). The memory
# helps when titan-aligned is below control-aligned past the window (512–4k and 4k+).
#
# Settings (environment):
#   T          the titan command            (default: node --import tsx engine/cli.ts)
#   PROVIDER   training provider            (default cpu; webgpu on the H200)
#   THREADS    CPU threads per process      (default: onnxruntime's choice)
#   OPERATOR   the Titan arm's LiZA operator (default delta_rule)
#   STEPS BATCH SEQ LOSS_FROM LR MU SCHEDULE TARGETS RANK SEED   the recipe (defaults below: the CPU
#              pilots' best for the Titan arm, docs/alignment.md)
#   MU         one μ, or several ("0.03 0.05"): one Titan arm each, all against the one control; with
#              several, the Titan models are named with _mu<μ> (titan-aligned_mu0.05 …)
#   CONCURRENT 1: align all arms at once (a process each; for a GPU), 0: one after the other
#   SCORE_PROVIDER  provider for perplexity (default cpu)   SCORE_JOBS  perplexity processes at once (default 1)
#   SCORE      which models to score        (default: all five above)
#   WORK       scratch folder for packages  (default /tmp/memory-helps)
#   RESULTS    where results go             (default $OUT when set, else $WORK/results)
#   HELD       held-out files               (default: the four of docs/alignment.md)
set -euo pipefail
cd "$(dirname "$0")/.."

T=${T:-node --import tsx engine/cli.ts}
PROVIDER=${PROVIDER:-cpu}
OPERATOR=${OPERATOR:-delta_rule}
STEPS=${STEPS:-112}
BATCH=${BATCH:-1}
SEQ=${SEQ:-2048}
LOSS_FROM=${LOSS_FROM:-128}
LR=${LR:-1e-3}
MU=${MU:-0.1}
SCHEDULE=${SCHEDULE:-constant}
TARGETS=${TARGETS:-q,k,v,o,gate,up,down}
RANK=${RANK:-8}
SEED=${SEED:-0}
CONCURRENT=${CONCURRENT:-0}
SCORE_PROVIDER=${SCORE_PROVIDER:-cpu}
SCORE_JOBS=${SCORE_JOBS:-1}
SCORE=${SCORE:-window titan-before titan-aligned control-aligned titan-aligned-mu0}
WORK=${WORK:-/tmp/memory-helps}
RESULTS=${RESULTS:-${OUT:-$WORK/results}}
HELD=${HELD:-engine/titanize/liza.ts engine/titanize/adapter.ts engine/memory/workspace-memory.ts engine/memory/discovery.ts}
MODEL=media/models/code-llama-19m
threads=()
[ -n "${THREADS:-}" ] && threads=(--threads "$THREADS")

for f in $HELD; do [ -f "$f" ] || { echo "memory-helps: held-out file $f does not exist" >&2; exit 1; }; done
mkdir -p "$WORK" "$RESULTS"
RESULTS=$(cd "$RESULTS" && pwd)
# The held-out files are scored as they were at the start (the working tree may change during the run:
# every model must score the same text), and kept with the results.
rm -rf "$RESULTS/held"
for f in $HELD; do mkdir -p "$RESULTS/held/$(dirname "$f")" && cp "$f" "$RESULTS/held/$f"; done
start=$(date +%s)
stamp() { echo "[$(($(date +%s) - start)) s] $*" >&2; }
recipe="operator $OPERATOR, steps $STEPS, batch $BATCH, seq $SEQ, loss-from $LOSS_FROM, lr $LR, μ $MU ($SCHEDULE), targets $TARGETS, rank $RANK, seed $SEED, $PROVIDER"
echo "$recipe" > "$RESULTS/recipe.txt"
stamp "recipe: $recipe"

# ── packages ──
# arm name per μ: "titan" for a single μ, "titan_mu<μ>" for several
mus=($MU)
[ ${#mus[@]} -gt 0 ] || { echo "memory-helps: MU names no μ" >&2; exit 1; }
suffix() { [ ${#mus[@]} = 1 ] && echo "" || echo "_mu$1"; }
arms=(control)
for mu in "${mus[@]}"; do arms+=("titan$(suffix "$mu")"); done
for arm in "${arms[@]}"; do rm -rf "$WORK/$arm" "$WORK/$arm-aligned" "$WORK/$arm-aligned-mu0" "$WORK/$arm-ablation-adapter"; done
$T titanize $MODEL --out "$WORK/control" --operator "$OPERATOR" --window 128 --mag-weight 0 > /dev/null
for mu in "${mus[@]}"; do
  $T titanize $MODEL --out "$WORK/titan$(suffix "$mu")" --operator "$OPERATOR" --window 128 --mag-weight "$mu" > /dev/null
done
stamp "titanized ${#arms[@]} arms"

# ── alignment: the same command line for both arms but the package ──
excludes=(--exclude 'test/fuzz/**' --exclude 'bench/**' --exclude 'media/**')
# Results (and their copy of the held-out files) inside the repository stay out of the training data.
case $RESULTS/ in "$PWD"/*) excludes+=(--exclude "${RESULTS#"$PWD"/}/**") ;; esac
for f in $HELD; do excludes+=(--exclude "$f"); done
align_arm() { # <arm>
  $T align "$WORK/$1" --data workspace:. "${excludes[@]}" --steps "$STEPS" --batch "$BATCH" --seq "$SEQ" --loss-from "$LOSS_FROM" \
    --lr "$LR" --mag-schedule "$SCHEDULE" --targets "$TARGETS" --rank "$RANK" --alpha $((2 * RANK)) --seed "$SEED" \
    --eval-every 0 --eval-sequences 8 --provider "$PROVIDER" "${threads[@]}" --out "$WORK/$1-aligned" --json \
    > "$RESULTS/report-$1.json" 2> "$RESULTS/align-$1.log"
}
if [ "$CONCURRENT" = 1 ]; then
  pids=()
  for arm in "${arms[@]}"; do align_arm "$arm" & pids+=($!); done
  status=0
  for j in "${!arms[@]}"; do
    wait "${pids[$j]}" || { echo "memory-helps: the ${arms[$j]} arm failed: $(tail -1 "$RESULTS/align-${arms[$j]}.log")" >&2; status=1; }
  done
  [ $status = 0 ] || exit 1
else
  for arm in "${arms[@]}"; do
    align_arm "$arm" || { echo "memory-helps: the $arm arm failed: $(tail -1 "$RESULTS/align-$arm.log")" >&2; exit 1; }
  done
fi
for arm in "${arms[@]}"; do cp "$WORK/$arm-aligned/train-log.jsonl" "$RESULTS/train-log-$arm.jsonl"; done
stamp "aligned ${#arms[@]} arms"

# ── ablation: each Titan arm's adapter with μ = 0 (titanize --adapter takes μ from its config.json) ──
case " $SCORE " in *" titan-aligned-mu0 "*)
  for mu in "${mus[@]}"; do
    arm="titan$(suffix "$mu")"
    cp -r "$WORK/$arm-aligned/adapter" "$WORK/$arm-ablation-adapter"
    node -e 'const fs=require("fs"),f=process.argv[1],c=JSON.parse(fs.readFileSync(f,"utf8"));c.mag_weight=0;fs.writeFileSync(f,JSON.stringify(c,null,2))' "$WORK/$arm-ablation-adapter/config.json"
    $T titanize $MODEL --adapter "$WORK/$arm-ablation-adapter" --out "$WORK/$arm-aligned-mu0" > /dev/null
  done
  stamp "built the ablation" ;;
esac

# ── scoring ──
package_of() { # <model, with _mu<μ> for a Titan arm among several>
  local base=${1%%_mu*} tag=""
  [ "$base" != "$1" ] && tag="_mu${1#*_mu}"
  case $base in
    window) echo "$WORK/control" ;;
    titan-before) echo "$WORK/titan$tag" ;;
    titan-aligned) echo "$WORK/titan$tag-aligned/package" ;;
    control-aligned) echo "$WORK/control-aligned/package" ;;
    titan-aligned-mu0) echo "$WORK/titan$tag-aligned-mu0" ;;
    *) echo "memory-helps: unknown model $1 in SCORE" >&2; exit 1 ;;
  esac
}
# The models scored: SCORE's names, the Titan ones once per μ.
models=()
for m in $SCORE; do
  case $m in
    titan-*) for mu in "${mus[@]}"; do models+=("$m$(suffix "$mu")"); done ;;
    *) models+=("$m") ;;
  esac
done
for m in "${models[@]}"; do package_of "$m" > /dev/null; done
rm -rf "$RESULTS/parts" && mkdir -p "$RESULTS/parts"
jobs=()
for m in "${models[@]}"; do
  for f in $HELD; do jobs+=("$m $(package_of "$m") $RESULTS/held/$f $(echo "$f" | tr / _)"); done
done
score_one() { # <model> <package> <file> <part name>
  local part="$RESULTS/parts/$1--$4.json"
  $T perplexity "$2" --file "$3" --json --provider "$SCORE_PROVIDER" "${threads[@]}" > "$part.tmp" && mv "$part.tmp" "$part"
}
export -f score_one
export T RESULTS SCORE_PROVIDER
export THREADS_ARGS="${threads[*]}"
printf '%s\n' "${jobs[@]}" | xargs -P "$SCORE_JOBS" -L 1 bash -c 'threads=($THREADS_ARGS); score_one "$0" "$1" "$2" "$3"'
for m in "${models[@]}"; do
  for f in $HELD; do cat "$RESULTS/parts/$m--$(echo "$f" | tr / _).json"; done > "$RESULTS/ppl-$m.jsonl"
done
stamp "scored ${#models[@]} models on $(echo $HELD | wc -w) files"

node scripts/memory-helps-table.mjs $(for m in "${models[@]}"; do echo "$m=$RESULTS/ppl-$m.jsonl"; done) | tee "$RESULTS/table.md"
stamp "done; results in $RESULTS"
