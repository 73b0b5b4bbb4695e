"""The pixels the model sees: a decoded frame turned into RGB at the planned size, by the reference's own operations.

qwen-omni-utils' ``fetch_video`` reads full-size RGB frames (decord converts with FFmpeg's swscale, as PyAV's
``to_ndarray`` does: the two agree bit for bit) and resizes them with torchvision's antialiased bicubic, which casts
uint8 to float32, interpolates, clamps to 0..255 and rounds back to uint8. ``precision="reference"`` runs exactly those
operations, so a planned frame's pixels equal ``fetch_video``'s. ``precision="fast"`` runs torch's uint8 kernel of the
same filter (fixed-point weights, and the first pass clamped to 0..255): a tenth of the float kernel's time, with most
pixels equal and the rest a level or two off (a few levels at hard edges, where the float pass overshoots).

Each decoding segment is one core's work: :func:`resizing_on_this_thread` keeps torch's resize on the segment's own
thread, as its decoder is. Left to itself, torch would run every resize on a team of threads as large as the machine's
core count, beside segments that already fill the cores.

torch is imported on the first resize: probing and planning (``omni-lmms plan``) never resize.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np

from ..config import ResizeChoice

__all__ = ["resize_frame", "resize_rgb", "resizing_on_this_thread"]


@contextmanager
def resizing_on_this_thread() -> Iterator[None]:
    """While active, torch runs on the calling thread alone; other threads keep their thread counts.

    torch's CPU kernels run on OpenMP (its Linux and macOS wheels), whose thread count is kept per thread: this sets
    the calling thread's to 1 and restores it after (``threadpoolctl``, for the OpenMP libraries loaded; a torch built
    without OpenMP is left as it is). torch.set_num_threads would change it for the whole process, the user's and
    lmms-eval's threads included."""
    import torch
    from threadpoolctl import threadpool_limits

    # torch sets a thread's OpenMP count on its first call in that thread: let that happen first, or it would undo the
    # limit on the first resize.
    torch.get_num_threads()
    with threadpool_limits(limits=1, user_api="openmp"):
        yield


def resize_frame(frame, out: np.ndarray, rotation: int, precision: ResizeChoice) -> None:
    """Write ``frame`` (a PyAV video frame), turned ``rotation`` degrees clockwise (a multiple of 90), as RGB into
    ``out`` (``H x W x 3`` uint8, the planned size) with the antialiased bicubic filter at ``precision``."""
    rgb = frame.to_ndarray(format="rgb24")
    if rotation:
        rgb = np.ascontiguousarray(np.rot90(rgb, k=-(rotation // 90)))
    resize_rgb(rgb, out, precision)


def resize_rgb(rgb: np.ndarray, out: np.ndarray, precision: ResizeChoice) -> None:
    """Write ``rgb`` (``h x w x 3`` uint8) into ``out`` (``H x W x 3`` uint8, the planned size) with the antialiased
    bicubic filter at ``precision``."""
    import torch

    # 1 x 3 x H x W over the H x W x 3 buffer, no copy (channels last, the layout torch's uint8 kernel is fast on).
    image = torch.from_numpy(rgb).permute(2, 0, 1).unsqueeze(0)
    size = out.shape[:2]
    target = torch.from_numpy(out)
    if precision == "fast":
        resized = torch.nn.functional.interpolate(image, size=size, mode="bicubic", align_corners=False, antialias=True)
        target.copy_(resized[0].permute(1, 2, 0))
        return
    # One channel at a time: the same values as the reference's 3-channel call, bit for bit (each output is a weighted
    # sum over its own channel; the parity test checks it), with a third of the float32 working set (4 bytes a source
    # pixel instead of 12).
    for channel in range(3):
        plane = image[:, channel : channel + 1].float()
        resized = torch.nn.functional.interpolate(plane, size=size, mode="bicubic", align_corners=False, antialias=True)
        target[:, :, channel].copy_(resized[0, 0].clamp_(0, 255).round_())
