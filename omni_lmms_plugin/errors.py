"""One exception family for the plugin.

Every error subclasses :class:`OmniPluginError` and, where it fits, a builtin too, so callers can catch either
(``except MediaError`` or ``except ValueError``). Messages say what was wrong, the value, the rule and the fix.
"""

from __future__ import annotations

__all__ = [
    "OmniPluginError",
    "ConfigError",
    "BudgetError",
    "MediaError",
    "DecodeTimeoutError",
    "GenerationFailedError",
]


class OmniPluginError(Exception):
    """Base class of every error raised by omni_lmms_plugin."""


class ConfigError(OmniPluginError, ValueError):
    """A model argument or policy value is invalid."""


class BudgetError(OmniPluginError, ValueError):
    """Nothing fits the token budget, even at the smallest allowed setting. ``needed`` is the smallest budget that
    would fit, where it is known."""

    def __init__(self, message: str, needed: int | None = None) -> None:
        self.needed = needed
        super().__init__(message)


class MediaError(OmniPluginError, ValueError):
    """A media file cannot be probed or decoded. The message names the file and the cause."""

    def __init__(self, path: str, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"{self.path}: {cause}")


class DecodeTimeoutError(MediaError, TimeoutError):
    """Decoding a file took longer than the configured ``decode_timeout``."""


class GenerationFailedError(OmniPluginError, RuntimeError):
    """A sample could not be answered after every allowed attempt (raised only with ``on_failure=raise``)."""
