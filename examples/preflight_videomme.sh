#!/usr/bin/env bash
# Everything a Video-MME run with Qwen2.5-Omni-7B would do to each of its 2,700 questions, without weights or a GPU:
# every video probed (headers only), every request planned with the adapter's own code and the model's processor,
# and each plan's peak memory predicted for 24, 48 and 80 GiB cards. Minutes on a laptop CPU.
#
# Needs: the Video-MME videos under $HF_HOME/videomme/data/ and the processor/config of MODEL (a few MB; the weights
# are never read). Add --limit 50 for a quick look, --include-path DIR for your own task folders.
#
# Expected output (numbers depend on the data):
#   omni_videomme: 2700 samples, 2700 planned
#     input tokens  min ...  median ...  p90 ...  p99 ...  max ...   (at most 32768 - max_new_tokens)
#     frames        min ...  median ...  max ...
#     resolutions   the most common planned sizes, e.g. 644x364 x..., ...
#     clipped by the budget: N samples; they wanted X tokens and got Y (Z% kept)   (long videos: plan case 2-5)
#     predicted peak  median ... GiB  max ... GiB
#     24 GiB: M do not fit as planned (M fit after the adapter shrinks them, 0 never) - doc_ids ...
#     48 GiB: all fit
#     80 GiB: all fit
#     unreadable: K   (each doc_id with its file and the reason; the walk does not stop)
#   slowest probes (...): the files whose headers were slowest to read
#   report: preflight/videomme.json; plots: preflight/videomme_tokens.png, preflight/videomme_memory.png
set -euo pipefail

MODEL="${MODEL:-Qwen/Qwen2.5-Omni-7B}"

omni-lmms preflight \
  --tasks omni_videomme \
  --model_args "pretrained=${MODEL}" \
  --gpu-mem 24,48,80 \
  --output preflight/videomme.json \
  "$@"
