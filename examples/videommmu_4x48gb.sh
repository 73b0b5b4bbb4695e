#!/usr/bin/env bash
# VideoMMMU on one machine with 4 GPUs of 48 GB: one full Qwen2.5-Omni-7B per GPU (data parallel), the default 32k
# context (the estimator predicts a 24.0 GiB peak for a full 32k plan, half a 48 GB card), then the report and a
# submission bundle.
#
# Needs: the VideoMMMU videos under $HF_HOME/video_mmmu/ (as lmms-eval's built-in video_mmmu tasks place them) and
# the weights in the Hugging Face cache (or set MODEL to a local folder).
#
# Expected output:
#   * preflight: per track (omni_videommmu_perception / _comprehension / _adaptation), the token and frame
#     distributions and "48 GiB: all fit"; any unreadable video is listed there, before GPU time is spent.
#   * lmms-eval's results table with videommmu_acc, videommmu_answered_acc and omni_failed per track and for the
#     omni_videommmu group, under runs/videommmu_4x48gb/<model>/<date>_results.json (+ samples files).
#   * runs/videommmu_4x48gb/omni_provenance/manifest_rank{0..3}.json and samples_rank{0..3}.jsonl.
#   * `omni-lmms report`: scores per track, "Failures: none" (or each failed doc_id with its reason), retries and
#     degradations, measured peak memory per sample (runs/videommmu_4x48gb/omni_report/peak_memory.png) and time per
#     sample, then "bundle: videommmu_4x48gb.tar.gz"; `sha256sum -c SHA256SUMS` inside it prints OK for every file.
# Rerunning the same command resumes from the provenance journal; failed samples are retried.
set -euo pipefail

MODEL="${MODEL:-Qwen/Qwen2.5-Omni-7B}"
OUT="${OUT:-runs/videommmu_4x48gb}"
TASKS_DIR="$(omni-lmms tasks-dir)"
MODEL_ARGS="pretrained=${MODEL},dtype=bfloat16"

omni-lmms preflight --tasks omni_videommmu --model_args "$MODEL_ARGS" --gpu-mem 48 \
  --output "$OUT/preflight/videommmu.json"

accelerate launch --num_processes 4 -m lmms_eval \
  --model qwen2_5_omni_safe \
  --model_args "$MODEL_ARGS" \
  --tasks omni_videommmu \
  --include_path "$TASKS_DIR" \
  --batch_size 1 \
  --log_samples \
  --output_path "$OUT"

omni-lmms report "$OUT" --bundle videommmu_4x48gb.tar.gz
