"""The library's error hierarchy.

Every error the pipeline raises on purpose derives from :class:`PipelineError`, and every
message says what to change to fix the call. Commands turn these into a one-line message
and a non-zero exit; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "BadImageError",
    "CaffemodelFormatError",
    "CheckpointError",
    "ConfigError",
    "CorruptStoreError",
    "ExtractionError",
    "ExtractionFailedError",
    "ImageSourceError",
    "IncompatibleStoreError",
    "PipelineError",
    "StoreBusyError",
    "StoreError",
    "UnknownFeatureError",
    "WeightsError",
]


class PipelineError(Exception):
    """Base class of every error raised on purpose by :mod:`pipeline`."""


class ConfigError(PipelineError, ValueError):
    """A ``params.yaml`` section or a keyword argument has an unknown key or a bad value."""


class UnknownFeatureError(PipelineError, KeyError):
    """A feature / extractor name that is not registered."""

    def __str__(self) -> str:  # KeyError quotes its message; we want it plain
        return str(self.args[0]) if self.args else ""


class ImageSourceError(PipelineError):
    """An image source that is missing, empty, or holds an image ``--strict`` refuses."""


class BadImageError(ImageSourceError):
    """A file that cannot be used as an image; the message is the reason recorded.

    :func:`pipeline.images.prepare` records it in the store's ``skipped`` attrs (or, with
    ``--strict``, stops with an :class:`ImageSourceError` naming the file).
    """


class StoreError(PipelineError):
    """A store that is missing, incomplete or not of the expected kind."""


class IncompatibleStoreError(StoreError):
    """A store made by another stage, other parameters, other code or another input."""


class CorruptStoreError(StoreError):
    """A chunk whose checksum does not match: the bytes on disk changed after writing."""


class StoreBusyError(StoreError):
    """Another process is writing the same store right now."""


class ExtractionError(PipelineError):
    """An extractor got input of the wrong shape or type."""


class WeightsError(PipelineError):
    """A weight file of the wrong architecture, with missing or misshaped tensors."""


class CaffemodelFormatError(WeightsError):
    """Malformed protobuf bytes in a ``.caffemodel``.

    :func:`pipeline.alexnet.weights.read_caffemodel` re-raises it as a :class:`WeightsError`
    naming the file and what to pass instead.
    """


class CheckpointError(PipelineError):
    """A checkpoint or model file that cannot be read (truncated, corrupt) or belongs to
    another run."""


class ExtractionFailedError(PipelineError):
    """Too many images failed in an extractor: a bug, not bad data (``max_failure_rate``)."""
