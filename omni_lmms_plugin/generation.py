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


# Hugging Face ``generate`` keys a task or ``--gen_kwargs`` may set beyond the core ones, with the type each takes.
# Sampling keys reach ``generate`` only when sampling; the others always do.
_SAMPLING_KEYS: dict[str, type] = {"top_p": float, "top_k": int, "min_p": float, "typical_p": float}
_ALWAYS_KEYS: dict[str, type] = {
    "repetition_penalty": float,
    "length_penalty": float,
    "no_repeat_ngram_size": int,
    "min_new_tokens": int,
    "use_cache": bool,
    "early_stopping": bool,
}
# Keys lmms-eval tasks commonly carry that have no meaning for a local model.
_IGNORED_KEYS = ("image_aspect_ratio", "max_length", "interleave_visuals")
_CORE_KEYS = ("max_new_tokens", "until", "temperature", "do_sample", "num_beams")


def _convert(key: str, value: Any, kind: type) -> Any:
    if kind is bool:
        word = str(value).strip().lower()
        if word not in ("true", "false", "1", "0"):
            raise ConfigError(f"generation_kwargs {key}={value!r} must be true or false")
        return word in ("true", "1")
    try:
        return kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"generation_kwargs {key}={value!r} must be {kind.__name__}") from None


@dataclass(frozen=True)
class GenerationParams:
    """lmms-eval's generation kwargs, normalised once per request.

    ``extra`` holds the other Hugging Face ``generate`` keys given (``top_k``, ``repetition_penalty``,
    ``min_new_tokens``, ...), sorted by name, already converted to their types.
    """

    max_new_tokens: int
    until: tuple[str, ...] = ()
    do_sample: bool = False
    temperature: float = 0.0
    num_beams: int = 1
    extra: tuple[tuple[str, Any], ...] = ()

    @classmethod
    def from_lmms(cls, gen_kwargs: dict[str, Any], default_max_new_tokens: int) -> GenerationParams:
        """Normalise one request's kwargs (``omni_*`` keys already split off).

        Raises:
            ConfigError: a key ``generate`` does not take (naming the supported ones), or a value of the wrong type.
        """
        kwargs = {key: value for key, value in gen_kwargs.items() if key not in _IGNORED_KEYS}
        until = kwargs.pop("until", None)
        if isinstance(until, str):
            until = [until]
        temperature = float(kwargs.pop("temperature", 0.0) or 0.0)
        do_sample = _convert("do_sample", kwargs.pop("do_sample", False), bool) or temperature > 0
        max_new_tokens = int(kwargs.pop("max_new_tokens", default_max_new_tokens))
        num_beams = int(kwargs.pop("num_beams", 1) or 1)
        known = {**_SAMPLING_KEYS, **_ALWAYS_KEYS}
        unknown = sorted(key for key in kwargs if key not in known)
        if unknown:
            raise ConfigError(
                f"unsupported generation_kwargs: {', '.join(unknown)}; supported: "
                f"{', '.join(sorted([*_CORE_KEYS, *known]))} (and omni_* video policy keys); remove the key from the "
                "task's generation_kwargs or --gen_kwargs"
            )
        # lmms-eval tasks write "top_p: null" for "not set".
        extra = tuple(
            sorted((key, _convert(key, value, known[key])) for key, value in kwargs.items() if value is not None)
        )
        if max_new_tokens < 1 or num_beams < 1:
            raise ConfigError(
                f"max_new_tokens={max_new_tokens} and num_beams={num_beams} must be at least 1; fix generation_kwargs"
            )
        return cls(max_new_tokens, tuple(s for s in (until or []) if s), do_sample, temperature, num_beams, extra)

    def to_hf(self) -> dict[str, Any]:
        """The keyword arguments of ``generate``: the only place Hugging Face's names appear."""
        hf: dict[str, Any] = {
            "max_new_tokens": self.max_new_tokens,
            "num_beams": self.num_beams,
            "do_sample": self.do_sample,
        }
        extra = dict(self.extra)
        if self.do_sample:
            hf["temperature"] = self.temperature if self.temperature > 0 else 1.0
        else:
            # Greedy: clear any sampling defaults the checkpoint's generation_config carries (and any the task set).
            hf.update(temperature=None, top_p=None, top_k=None)
            extra = {key: value for key, value in extra.items() if key not in _SAMPLING_KEYS}
        hf.update(extra)
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
