#!/usr/bin/env bash
# The GPU check, in one call (about 6-8 minutes on one H100 / H200), from the repository root or anywhere:
#   bash benchmarks/gpu_check.sh [OUT_DIR]              # default OUT_DIR: benchmarks/gpu_check
#   GPU_CHECK_DRY=1 bash benchmarks/gpu_check.sh /tmp/x  # the same steps at toy sizes on the CPU (what the tests run)
#
# ViT-B/16 at 224 px (benchmarks/models/vit-base-patch16-224, random weights), bf16, torch.compile, end to end from
# JPEG bytes in a datasets dataset (benchmarks/photos.py writes it), in four steps:
#   1. write the photo dataset;
#   2. `vit-pipeline benchmark benchmarks/photos-vit-base.yaml`: data-only, model-only and end-to-end images/s, MFU and
#      peak memory for the recipe and the reference configuration (the example script's way), Trainer steps;
#   3. a short fine-tune with the Trainer backend (compiled) and 4. with the Accelerate backend (eager: the loop does
#      not compile): images/s of the whole run, peak memory, and eval accuracy before and after, which must rise;
# then prints one table and writes OUT_DIR/gpu_check.json (every figure; benchmark.json holds the benchmark's own).
# Installs nothing: the machine may have no network. It needs the project's Python environment (.venv at the
# repository root, or $PYTHON) and stops at once, saying what is missing, when it is not there.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
OUT="$(mkdir -p "${1:-benchmarks/gpu_check}" && cd "${1:-benchmarks/gpu_check}" && pwd)"
DRY="${GPU_CHECK_DRY:-0}"
START=$(date +%s)

# --- Python environment: found, complete, and (unless dry) a CUDA GPU. -------------------------------------------
PYTHON="${PYTHON:-}"
if [[ -z "$PYTHON" ]]; then
  for candidate in "$ROOT/.venv/bin/python" "$ROOT/../main/.venv/bin/python" "$(command -v python3 || true)"; do
    if [[ -n "$candidate" && -x "$candidate" ]]; then PYTHON="$candidate"; break; fi
  done
fi
if [[ -z "$PYTHON" ]]; then
  echo "gpu_check: no Python found: create .venv at the repository root (pip install -e '.[test]') or set PYTHON" >&2
  exit 3
fi
"$PYTHON" - "$DRY" <<'EOF' || exit 3
import importlib.util, sys
dry = sys.argv[1] == "1"
missing = [m for m in ("torch", "torchvision", "transformers", "datasets", "accelerate", "evaluate", "skimage",
                       "yaml", "safetensors") if importlib.util.find_spec(m) is None]
if missing:
    sys.exit(f"gpu_check: {sys.executable} lacks {', '.join(missing)}: install the project there first "
             "(pip install -e '.[test]'); this script installs nothing")
import torch
if not dry and not torch.cuda.is_available():
    sys.exit("gpu_check: no CUDA GPU visible to torch " + torch.__version__ + " (set GPU_CHECK_DRY=1 for the CPU "
             "dry run)")
print(f"gpu_check: python {sys.executable}, torch {torch.__version__}, "
      + (torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU (dry run)"))
EOF
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
export HF_DATASETS_CACHE="$OUT/datasets-cache"

if [[ "$DRY" == "1" ]]; then
  # Toy sizes on the CPU: the same steps and files, in well under a minute on a quiet core.
  COUNT=48; EVAL_COUNT=16; STEPS=2; TUNE_STEPS=4; BATCH=8; LR=1.0e-3
  MODEL=(--model_name_or_path benchmarks/models/vit-tiny-224 --image_size 64)
  COMPILE=(--torch_compile false); WORKERS=(--dataloader_num_workers 1)
else
  # 4,096 photos: 16 steps of 256 per epoch; 30 timed steps; a fine-tune of 60 steps.
  COUNT=4096; EVAL_COUNT=512; STEPS=30; TUNE_STEPS=60; BATCH=256; LR=3.0e-4
  MODEL=(); COMPILE=(); WORKERS=()
fi
step() { echo; echo "=== gpu_check [$(( $(date +%s) - START )) s]: $*"; }

# --- 1. The photos: JPEG bytes (ImageNet-sized) in a save_to_disk dataset. ----------------------------------------
step "writing $COUNT + $EVAL_COUNT photos to $OUT/photos"
if [[ ! -f "$OUT/photos/dataset_dict.json" ]]; then
  "$PYTHON" benchmarks/photos.py "$OUT/photos" --count "$COUNT" --eval_count "$EVAL_COUNT"
fi
COMMON=(--dataset_name "$OUT/photos" --per_device_train_batch_size "$BATCH" --per_device_eval_batch_size "$BATCH"
        "${MODEL[@]}" "${WORKERS[@]}")

# --- 2. Benchmark: the recipe against the reference configuration (Trainer backend). ------------------------------
step "benchmark: recipe vs reference, $STEPS timed steps"
"$PYTHON" -m vit_pipeline benchmark benchmarks/photos-vit-base.yaml "${COMMON[@]}" "${COMPILE[@]}" --steps "$STEPS" \
  --json "$OUT/benchmark.json" 2>&1 | tee "$OUT/benchmark.log"

# --- 3-4. Short fine-tunes on both backends: accuracy must rise. ---------------------------------------------------
TUNE=(--max_steps "$TUNE_STEPS" --learning_rate "$LR" --warmup_steps 0.1 --eval_on_start true
      --eval_strategy steps --eval_steps "$TUNE_STEPS" --save_strategy no --load_best_model_at_end false
      --logging_strategy steps --logging_steps 10 --report_to none --disable_tqdm true)
for backend in trainer accelerate; do
  step "fine-tune, $backend backend, $TUNE_STEPS steps"
  extra=("${COMPILE[@]}")
  # The Accelerate loop does not compile (a launch config's dynamo_config does): eager there.
  [[ "$backend" == accelerate ]] && extra=(--torch_compile false)
  rm -rf "$OUT/tune-$backend"
  "$PYTHON" -m vit_pipeline train benchmarks/photos-vit-base.yaml "${COMMON[@]}" "${TUNE[@]}" "${extra[@]}" \
    --backend "$backend" --output_dir "$OUT/tune-$backend" 2>&1 | tee "$OUT/tune-$backend.log" | grep -E \
    "Speed settings|eval_accuracy|train_runtime|Done:" || true
  [[ -f "$OUT/tune-$backend/all_results.json" ]] || { echo "gpu_check: the $backend fine-tune failed: see" \
    "$OUT/tune-$backend.log" >&2; exit 1; }
done

# --- Summary: one table, one JSON. ---------------------------------------------------------------------------------
step "summary"
"$PYTHON" benchmarks/gpu_check_summary.py "$OUT" --dry "$DRY" --seconds "$(( $(date +%s) - START ))"
