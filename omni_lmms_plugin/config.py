"""The adapter's configuration: one strict, frozen object built from lmms-eval's ``--model_args``, and the per-task
video policy that a task YAML declares through ``omni_*`` keys in its ``generation_kwargs``. No torch import."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, fields
from typing import Any, Literal, get_args

from .errors import ConfigError
from .prefetch import default_decode_workers, default_workers
from .video_plan import REFERENCE_FRAMES_FPS, FramePolicy, VideoPolicy

__all__ = [
    "AdapterConfig",
    "TaskVideoOverrides",
    "DEFAULT_SYSTEM_PROMPT",
    "NOT_IN_RESUME_KEY",
    "split_generation_kwargs",
    "resolve_dtype",
    "resolve_attention",
]

# The system prompt Qwen2.5-Omni was trained with; the model card asks for it verbatim.
DEFAULT_SYSTEM_PROMPT = (
    "You are Qwen, a virtual human developed by the Qwen Team, Alibaba Group, capable of perceiving auditory and "
    "visual inputs, as well as generating text and speech."
)

AttnChoice = Literal["auto", "sdpa", "flash_attention_2", "eager"]
DtypeChoice = Literal["auto", "bfloat16", "float16", "float32"]
AudioChoice = Literal["auto", "true", "false"]
FailureChoice = Literal["record", "raise"]
SeekChoice = Literal["exact", "keyframe"]
# How kept frames are resized: the reference's float arithmetic (its pixels, bit for bit) or torch's faster uint8
# kernel of the same filter (media/resize.py).
ResizeChoice = Literal["reference", "fast"]

_CHOICES: dict[str, tuple[str, ...]] = {
    "attn_implementation": get_args(AttnChoice),
    "dtype": get_args(DtypeChoice),
    "use_audio_in_video": get_args(AudioChoice),
    "on_failure": get_args(FailureChoice),
    "seek_mode": get_args(SeekChoice),
    "resize": get_args(ResizeChoice),
    "frame_policy": get_args(FramePolicy),
}

# Model args that change neither the inputs nor the answers: left out of the resume key and of run comparisons.
NOT_IN_RESUME_KEY = (
    "provenance_dir",
    "prefetch",
    "prefetch_workers",
    "decode_workers",
    "resume",
    "batch_size",
    "decode_timeout",
)


def _to_bool_word(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value).strip().lower()


@dataclass(frozen=True)
class AdapterConfig:
    """Every ``--model_args`` key of ``qwen2_5_omni_safe`` with its default. See the README's option table."""

    pretrained: str = "Qwen/Qwen2.5-Omni-7B"
    revision: str | None = None
    device: str = "auto"
    device_map: str | None = None
    max_memory_per_gpu: str | None = None
    dtype: DtypeChoice = "auto"
    attn_implementation: AttnChoice = "auto"
    max_model_len: int | None = None
    max_new_tokens: int = 512
    # The sampling defaults are the policy's own, so the two cannot drift.
    fps: float = VideoPolicy.fps
    min_frames: int = VideoPolicy.min_frames
    max_frames: int = VideoPolicy.max_frames
    frame_floor: int = VideoPolicy.frame_floor
    min_pixels: int = VideoPolicy.min_pixels
    max_pixels: int = VideoPolicy.max_pixels
    frame_policy: FramePolicy = VideoPolicy.frame_policy
    frames_fps: float = REFERENCE_FRAMES_FPS  # the rate of an image-sequence video
    max_video_tokens: int | None = None
    use_audio_in_video: AudioChoice = "auto"
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT
    oom_retries: int = 3
    oom_shrink: float = 0.7
    on_failure: FailureChoice = "record"
    decode_timeout: float = 120.0
    seek_mode: SeekChoice = "exact"
    resize: ResizeChoice = "reference"
    max_memory_gib: float | None = None
    vision_group_frames: int = 64
    prefetch: int = 1
    # Requests showing the same media with the same settings are planned, decoded, encoded and prefilled once.
    share_video_prefix: bool = True
    # With several data-parallel ranks, each video's requests are answered on one rank (rank_sharing.py). Off by
    # itself when lmms-eval's --use_cache is on: a rank whose requests all hit the cache never calls the model.
    share_across_ranks: bool = True
    # Threads preparing requests ahead of the model (None: half the rank's cores, 1 to 8); see prefetch.py.
    prefetch_workers: int | None = None
    # Segments one video's frames are decoded in at once (None: the cores shared out among the preparation threads).
    decode_workers: int | None = None
    provenance_dir: str | None = None
    resume: bool = True
    batch_size: int = 1

    def __post_init__(self) -> None:
        for name, allowed in _CHOICES.items():
            value = getattr(self, name)
            if value not in allowed:
                raise ConfigError(f"{name}={value!r} is not one of {', '.join(allowed)}")
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens={self.max_new_tokens} must be at least 1")
        if self.max_model_len is not None and self.max_model_len <= self.max_new_tokens:
            raise ConfigError(f"max_model_len={self.max_model_len} must exceed max_new_tokens={self.max_new_tokens}")
        if self.oom_retries < 0:
            raise ConfigError(f"oom_retries={self.oom_retries} must not be negative")
        if not 0 < self.oom_shrink < 1:
            raise ConfigError(
                f"oom_shrink={self.oom_shrink} must be between 0 and 1 (the fraction of the last plan's tokens a retry may use)"
            )
        if self.decode_timeout <= 0:
            raise ConfigError(f"decode_timeout={self.decode_timeout} must be positive (seconds)")
        if self.vision_group_frames < 2 or self.vision_group_frames % 2:
            raise ConfigError(f"vision_group_frames={self.vision_group_frames} must be an even number >= 2")
        if self.prefetch < 0:
            raise ConfigError(f"prefetch={self.prefetch} must be 0 (off) or a queue depth")
        if self.prefetch_workers is not None and self.prefetch_workers < 1:
            raise ConfigError(
                f"prefetch_workers={self.prefetch_workers} must be at least 1 (threads preparing requests; "
                "omit it for half the rank's cores)"
            )
        if self.decode_workers is not None and self.decode_workers < 1:
            raise ConfigError(
                f"decode_workers={self.decode_workers} must be at least 1 (segments of one video decoded at once; "
                "omit it to share the cores among the preparation threads)"
            )
        if self.batch_size < 1:
            raise ConfigError(f"batch_size={self.batch_size} must be at least 1")
        if not self.frames_fps > 0:
            raise ConfigError(f"frames_fps={self.frames_fps} must be positive (frames per second of a frame folder)")
        if self.max_memory_gib is not None and self.max_memory_gib <= 0:
            raise ConfigError(f"max_memory_gib={self.max_memory_gib} must be positive")
        self.video_policy()  # validates fps, frames and pixels with the policy's own checks

    @classmethod
    def from_model_args(cls, args: dict[str, Any]) -> AdapterConfig:
        """Build from lmms-eval's parsed ``--model_args`` (plus batch_size/device). Unknown keys are an error."""
        valid = {f.name: f for f in fields(cls)}
        unknown = sorted(set(args) - set(valid) - {"max_batch_size"})
        if unknown:
            raise ConfigError(
                f"unknown model_args for qwen2_5_omni_safe: {', '.join(unknown)}. Valid keys: {', '.join(sorted(valid))}"
            )
        values: dict[str, Any] = {}
        for key, raw in args.items():
            if key == "max_batch_size" or raw is None:
                continue
            values[key] = _coerce(key, raw, valid[key].type)
        return cls(**values)

    def video_policy(self, overrides: TaskVideoOverrides | None = None) -> VideoPolicy:
        """The sampling policy for a request: these model args, then the task's overrides on top."""
        fields_ = {
            "fps": self.fps,
            "min_frames": self.min_frames,
            "max_frames": self.max_frames,
            "min_pixels": self.min_pixels,
            "max_pixels": self.max_pixels,
            "frame_policy": self.frame_policy,
            **(overrides.policy_fields() if overrides is not None else {}),
        }
        # The floor never sits below the minimum, whichever of the two the task raised.
        return VideoPolicy(**fields_, frame_floor=max(self.frame_floor, fields_["min_frames"]))

    def preparing_at_once(self) -> int:
        """Requests prepared at once: ``prefetch_workers`` (default: half the rank's cores, 1 to 8), one with prefetch off."""
        if self.prefetch == 0:
            return 1
        return self.prefetch_workers or default_workers()

    def video_decode_workers(self) -> int:
        """Segments each video is decoded in: ``decode_workers``, by default the cores shared out among the requests
        prepared at once."""
        return self.decode_workers or default_decode_workers(self.preparing_at_once())

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def resolve_dtype(choice: str, device_type: str) -> str:
    """The dtype a model runs in: ``auto`` is bfloat16 on CUDA and float32 on the CPU (bf16 matmuls there are slow)."""
    if choice == "auto":
        return "bfloat16" if device_type == "cuda" else "float32"
    return choice


def resolve_attention(choice: str, device_type: str, flash_available: bool) -> str:
    """The attention a model runs with: ``auto`` is flash_attention_2 on CUDA when flash-attn imports, else sdpa."""
    if choice == "auto":
        return "flash_attention_2" if device_type == "cuda" and flash_available else "sdpa"
    return choice


def _coerce(key: str, raw: Any, annotation: Any) -> Any:
    """lmms-eval auto-types ``--model_args`` values (``"1"`` -> 1, ``"True"`` -> True); map them onto our types."""
    text = str(annotation)
    if key in _CHOICES:
        return _to_bool_word(raw) if key == "use_audio_in_video" else str(raw)
    if "None" in text and str(raw).strip().lower() in ("none", "null", ""):
        return None
    if key == "batch_size" and str(raw).startswith("auto"):
        return 1  # lmms-eval's "auto": requests are answered one at a time in any case
    try:
        if text.startswith("bool"):
            word = _to_bool_word(raw)
            if word not in ("true", "false", "1", "0"):
                raise ValueError
            return word in ("true", "1")
        if text.startswith("int"):
            if isinstance(raw, float) and not raw.is_integer():
                raise ValueError
            return int(raw)
        if text.startswith("float"):
            return float(raw)
    except (TypeError, ValueError):
        raise ConfigError(f"model_args {key}={raw!r} is not a valid {text.split(' ')[0]}") from None
    return str(raw) if text.startswith("str") else raw


@dataclass(frozen=True)
class TaskVideoOverrides:
    """The video policy a task declares in ``generation_kwargs`` as ``omni_fps``, ``omni_max_frames``,
    ``omni_min_frames``, ``omni_max_pixels``, ``omni_use_audio_in_video`` (the task's modality) and
    ``omni_frames_fps`` (the rate of its frame-folder videos). These keys never reach ``generate``."""

    fps: float | None = None
    max_frames: int | None = None
    min_frames: int | None = None
    max_pixels: int | None = None
    use_audio_in_video: AudioChoice | None = None
    frames_fps: float | None = None

    def policy_fields(self) -> dict[str, Any]:
        return {
            name: getattr(self, name)
            for name in ("fps", "max_frames", "min_frames", "max_pixels")
            if getattr(self, name) is not None
        }


_OVERRIDE_PREFIX = "omni_"


def split_generation_kwargs(gen_kwargs: dict[str, Any]) -> tuple[dict[str, Any], TaskVideoOverrides]:
    """Separate a task's ``omni_*`` video policy from the generation parameters proper."""
    generation: dict[str, Any] = {}
    policy: dict[str, Any] = {}
    allowed = {f.name for f in fields(TaskVideoOverrides)}
    for key, value in gen_kwargs.items():
        if not key.startswith(_OVERRIDE_PREFIX):
            generation[key] = value
            continue
        name = key[len(_OVERRIDE_PREFIX) :]
        if name not in allowed:
            raise ConfigError(
                f"unknown task video key {key!r} in generation_kwargs; valid: {', '.join('omni_' + a for a in sorted(allowed))}"
            )
        policy[name] = value
    if "use_audio_in_video" in policy:
        policy["use_audio_in_video"] = _to_bool_word(policy["use_audio_in_video"])
        if policy["use_audio_in_video"] not in _CHOICES["use_audio_in_video"]:
            raise ConfigError(
                f"omni_use_audio_in_video={gen_kwargs['omni_use_audio_in_video']!r} is not auto/true/false"
            )
    for name in ("max_frames", "min_frames", "max_pixels"):
        if name in policy:
            policy[name] = int(policy[name])
    for name in ("fps", "frames_fps"):
        if name in policy:
            policy[name] = float(policy[name])
    return generation, TaskVideoOverrides(**policy)
