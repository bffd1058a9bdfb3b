"""Errors a user can cause and fix: the CLI prints them as one line and exits non-zero.

Everything else (a bug in vss-edge) keeps its traceback.
"""


class VssEdgeError(Exception):
    """Base class for user-facing errors: the message alone must say what is wrong."""


class BundleError(VssEdgeError):
    """A bundle directory, its manifest or one of its graph files is missing, corrupt or tampered."""


class FrameError(VssEdgeError):
    """A frame handed to Pipeline.step has the wrong type, shape, dtype or channel count."""


class SourceError(VssEdgeError):
    """A video file, image folder or camera cannot be opened or read."""


class CheckpointError(VssEdgeError):
    """A checkpoint file does not match the architecture it is loaded into."""
