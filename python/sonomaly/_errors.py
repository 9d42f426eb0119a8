"""Exceptions raised by sonomaly; each carries the core's message (what was wrong and what to do)."""


class Error(Exception):
    """Any error of the sonomaly core."""


class AudioError(Error):
    """A recording could not be decoded or used: empty, corrupted, silent, too short, non-finite samples."""


class BankError(Error):
    """A bank file is damaged, of an unknown version, or made for another backbone or front end."""


class ModelError(Error):
    """A backbone folder or ONNX model could not be loaded or run."""


class InvalidInputError(Error, ValueError):
    """A bad argument: an unknown preset or detector, banks that cannot be merged, an existing output path..."""


class IOError(Error, OSError):  # noqa: A001 - the core's I/O errors; also an OSError
    """Reading or writing a file failed (the message names the file and the operating system's error)."""
