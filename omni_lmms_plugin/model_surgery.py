"""Memory-lean changes to the thinker that leave its answers unchanged.

- :func:`install_last_position_logits` makes the thinker compute logits for the last position only, which is all
  generation reads (the thinker's forward has no ``logits_to_keep``; full prefill logits cost ``vocab x L`` values).
- :func:`install_grouped_vision_encoding` encodes each video through the vision tower a few temporal grids at a time.
  The tower never attends across 2-frame temporal grids, so the embeddings equal a one-pass encoding while the peak
  is bounded by the group, not the video.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers.modeling_outputs import BaseModelOutputWithPooling

__all__ = ["install_last_position_logits", "install_grouped_vision_encoding"]


def _keep_last_position(module: torch.nn.Module, args: tuple) -> tuple:
    hidden = args[0]
    return (hidden[:, -1:, :], *args[1:]) if hidden.dim() == 3 and hidden.shape[1] > 1 else args


def install_last_position_logits(thinker: torch.nn.Module) -> Any:
    """Feed only the last hidden state to ``lm_head``. Generation (greedy, sampling, beams) reads ``logits[:, -1]``
    alone, so answers are unchanged. Returns the hook handle (``handle.remove()`` restores full logits)."""
    return thinker.lm_head.register_forward_pre_hook(_keep_last_position)


def install_grouped_vision_encoding(thinker: torch.nn.Module, group_frames: int) -> None:
    """Encode videos ``group_frames`` frames (``group_frames // 2`` temporal grids) at a time."""
    inner = thinker.model
    visual = inner.visual
    merge = visual.spatial_merge_size
    grids_per_group = max(1, group_frames // 2)
    original = inner.get_video_features

    def get_video_features(
        pixel_values_videos: torch.Tensor, video_grid_thw: torch.Tensor | None = None, **kwargs: Any
    ):
        if video_grid_thw is None:
            return original(pixel_values_videos, video_grid_thw, **kwargs)
        pixel_values_videos = pixel_values_videos.type(visual.dtype)
        per_video: list[torch.Tensor] = []
        offset = 0
        for grids, height, width in video_grid_thw.tolist():
            patches_per_grid = height * width
            pieces = []
            for start in range(0, grids, grids_per_group):
                count = min(grids_per_group, grids - start)
                chunk = pixel_values_videos[offset : offset + count * patches_per_grid]
                grid = torch.tensor([[count, height, width]], device=video_grid_thw.device, dtype=video_grid_thw.dtype)
                pieces.append(visual(chunk, grid_thw=grid, return_dict=True).pooler_output)
                offset += count * patches_per_grid
            per_video.append(torch.cat(pieces, dim=0))
        expected = [g * h * w // merge**2 for g, h, w in video_grid_thw.tolist()]
        if [piece.shape[0] for piece in per_video] != expected:
            raise RuntimeError(
                f"grouped vision encoding produced {[p.shape[0] for p in per_video]} tokens, expected {expected}"
            )
        return BaseModelOutputWithPooling(pooler_output=tuple(per_video))

    inner.get_video_features = get_video_features
