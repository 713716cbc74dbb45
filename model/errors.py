"""The model's errors a person can act on: each is a ProverbotError whose str() is the message to show."""

from proverbot_errors import ProverbotError


class CorpusError(ProverbotError):
    """The training corpus cannot be read or has the wrong shape."""


class ModelError(ProverbotError):
    """A run folder, checkpoint or base model cannot be used."""


class BusyError(ProverbotError):
    """The model worker's queue is full."""


class SamplingError(ProverbotError):
    """Sampling failed or timed out."""
