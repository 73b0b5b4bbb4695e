"""Generation parameters and the ``generate`` call.

- :class:`GenerationParams` is the one place where lmms-eval's generation kwargs become Hugging Face's.
- :func:`run_generate` makes one ``generate`` call and returns the answer cut at the stop strings.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from .errors import ConfigError

__all__ = ["GenerationParams", "run_generate"]


# --------------------------------------------------------------------------------------------------------------------
# Generation parameters
# --------------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GenerationParams:
    """lmms-eval's generation kwargs, normalised once per request."""

    max_new_tokens: int
    until: tuple[str, ...] = ()
    do_sample: bool = False
    temperature: float = 0.0
    top_p: float | None = None
    num_beams: int = 1

    @classmethod
    def from_lmms(cls, gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> GenerationParams:
        kwargs = dict(gen_kwargs)
        until = kwargs.pop("until", None)
        if isinstance(until, str):
            until = [until]
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = bool(kwargs.pop("do_sample", False)) or temperature > 0
        top_p = kwargs.pop("top_p", None)
        params = cls(
            max_new_tokens=int(kwargs.pop("max_new_tokens", default_max_new_tokens)),
            until=tuple(s for s in (until or []) if s),
            do_sample=do_sample,
            temperature=temperature,
            top_p=float(top_p) if top_p is not None else None,
            num_beams=int(kwargs.pop("num_beams", 1) or 1),
        )
        # Keys lmms-eval tasks commonly carry that have no meaning for a local model.
        for ignored in ("image_aspect_ratio", "max_length", "interleave_visuals"):
            kwargs.pop(ignored, None)
        if kwargs:
            raise ConfigError(
                f"unsupported generation_kwargs: {', '.join(sorted(kwargs))}; supported: max_new_tokens, until, "
                "temperature, do_sample, top_p, num_beams (and omni_* video policy keys)"
            )
        if params.max_new_tokens < 1 or params.num_beams < 1:
            raise ConfigError(f"max_new_tokens and num_beams must be at least 1, got {params}")
        return params

    def to_hf(self) -> dict[str, Any]:
        """The keyword arguments of ``generate``: the only place Hugging Face's names appear."""
        hf: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
        }
        if self.do_sample:
            hf["temperature"] = self.temperature if self.temperature > 0 else 1.0
            if self.top_p is not None:
                hf["top_p"] = self.top_p
        else:
            # Greedy: clear any sampling defaults the checkpoint's generation_config carries.
            hf.update(temperature=None, top_p=None, top_k=None)
        return hf

    def cut_at_stop(self, text: str) -> str:
        """The answer up to the first stop string (generation may run past one inside a token)."""
        cut = len(text)
        for stop in self.until:
            position = text.find(stop)
            if position != -1:
                cut = min(cut, position)
        return text[:cut]


def run_generate(
    thinker: torch.nn.Module,
    inputs: dict[str, Any],
    params: GenerationParams,
    *,
    use_audio_in_video: bool,
    tokenizer: Any,
) -> tuple[str, int]:
    """One ``generate`` call; returns the decoded answer (cut at stop strings) and the number of new tokens."""
    hf = params.to_hf()
    if params.until:
        hf["stop_strings"] = list(params.until)
        hf["tokenizer"] = tokenizer
    with torch.inference_mode():
        output = thinker.generate(**inputs, use_audio_in_video=use_audio_in_video, **hf)
    new_tokens = output[0, inputs["input_ids"].shape[1] :]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return params.cut_at_stop(text), int(new_tokens.numel())
