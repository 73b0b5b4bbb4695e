"""Still images as qwen-omni-utils' ``fetch_image`` makes them: read as RGB with an RGBA image laid over white
(:func:`open_image`), then resized with PIL's bicubic to the planned size (:func:`resize_image`). The processor is
handed that image, as the reference hands it ``fetch_image``'s, so its own resize keeps the size."""

from __future__ import annotations

import os

from PIL import Image

from ..errors import MediaError

__all__ = ["open_image", "resize_image"]


def _reference_rgb(image: Image.Image) -> Image.Image:
    """RGB as ``fetch_image`` converts: an RGBA image over a white background (its alpha as the paste mask); any other
    mode by PIL's ``convert("RGB")``, which drops transparency as the reference does."""
    if image.mode == "RGBA":
        rgb = Image.new("RGB", image.size, (255, 255, 255))
        rgb.paste(image, mask=image.getchannel("A"))
        return rgb
    return image.convert("RGB")


def open_image(source: str | os.PathLike | Image.Image) -> Image.Image:
    """An RGB image from a path or an in-memory PIL image, as ``fetch_image`` reads it. Raises :class:`MediaError`
    naming an unreadable file."""
    if isinstance(source, Image.Image):
        return _reference_rgb(source)
    try:
        with Image.open(source) as image:
            image.load()
            return _reference_rgb(image)
    except (OSError, ValueError) as error:
        raise MediaError(os.fspath(source), f"unreadable image: {error}") from error


def resize_image(image: Image.Image, width: int, height: int) -> Image.Image:
    """``image`` at ``width`` x ``height`` by PIL's bicubic, ``fetch_image``'s resize (its ``Image.resize`` default
    for RGB)."""
    return image.resize((width, height), Image.Resampling.BICUBIC)
