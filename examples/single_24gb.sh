#!/usr/bin/env bash
# Video-MME on a single 24 GB GPU with Qwen2.5-Omni-7B. A full 32k plan is predicted at 24.0 GiB, over the ~22.5 GiB
# a 24 GB card leaves usable, so the context is 16k and the vision tower encodes 16 frames at a time (predicted peak
# 20.9 GiB). Alternative: MODEL=Qwen/Qwen2.5-Omni-3B with the full 32k context (predicted 13.7 GiB): drop the two
# overrides below.
#
# Needs: the Video-MME videos under $HF_HOME/videomme/data/ (as lmms-eval's built-in videomme task places them).
#
# Expected output:
#   * preflight: "24 GiB: all fit" for omni_videomme (or the doc_ids the adapter would shrink before generating,
#     with how many shrink steps), the share of samples the 16k budget clipped (plan case > 1) and by how much.
#   * lmms-eval's results table: videomme_acc, videomme_answered_acc, omni_failed for omni_videomme, in
#     runs/videomme_24gb/<model>/<date>_results.json with the samples file beside it.
#   * runs/videomme_24gb/omni_provenance/{manifest,samples}_rank0.*
#   * `omni-lmms report`: the scores, failures with reasons, out-of-memory retries and degradations (expected: few
#     or none; each names the doc_id, the attempt and the budget scale), peak memory and time per sample.
set -euo pipefail

MODEL="${MODEL:-Qwen/Qwen2.5-Omni-7B}"
OUT="${OUT:-runs/videomme_24gb}"
MODEL_ARGS="pretrained=${MODEL},dtype=bfloat16,max_model_len=16384,vision_group_frames=16"

omni-lmms preflight --tasks omni_videomme --model_args "$MODEL_ARGS" --gpu-mem 24 \
  --output "$OUT/preflight/videomme.json"

lmms-eval \
  --model qwen2_5_omni_safe \
  --model_args "$MODEL_ARGS" \
  --tasks omni_videomme \
  --include_path "$(omni-lmms tasks-dir)" \
  --batch_size 1 \
  --log_samples \
  --output_path "$OUT"

omni-lmms report "$OUT"
