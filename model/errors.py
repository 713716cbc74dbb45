"""One exception family for errors a person can act on; front ends show str(err)."""


class ProverbotError(Exception):
    """Base class: the message is written for the person who asked."""


class CorpusError(ProverbotError):
    """The training corpus cannot be read or has the wrong shape."""


class ModelError(ProverbotError):
    """A run folder, checkpoint or base model cannot be used."""


class BusyError(ProverbotError):
    """The model worker's queue is full."""


class SamplingError(ProverbotError):
    """Sampling failed or timed out."""
