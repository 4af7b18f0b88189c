"""Exception hierarchy. Every message says what was wrong and what to do about it."""

from __future__ import annotations

__all__ = [
    "SpadepisError",
    "InputError",
    "CheckpointError",
    "ConfigError",
    "StorageError",
]


class SpadepisError(Exception):
    """Base class of every error spadepis raises on purpose."""


class InputError(SpadepisError, ValueError):
    """A bad input item (unreadable image, label id out of range, size mismatch).

    In the pipeline this becomes a manifest row with ``status="error"``; the shard goes on.
    """


class CheckpointError(SpadepisError):
    """A checkpoint file that cannot be read or does not match the model it should fill."""


class ConfigError(SpadepisError, ValueError):
    """A configuration problem found before any work starts."""


class StorageError(SpadepisError, OSError):
    """A (possibly transient) failure reading or writing storage; retried by the pipeline."""
