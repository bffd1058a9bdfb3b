"""Errors a user can cause and fix: the CLI prints them as one line and exits non-zero.

Everything else (a bug in vss-edge) keeps its traceback.
"""
import errno

# OSError numbers that mean "this output cannot be written here" (the user's disk, mount or
# permissions), not a bug: full disk or quota, read-only filesystem, no permission, I/O error,
# file too large.
OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM, errno.EIO,
                           errno.EFBIG})


class VssEdgeError(Exception):
    """Base class for user-facing errors: the message alone must say what is wrong."""


class BundleError(VssEdgeError):
    """A bundle directory, its manifest or one of its graph files is missing, corrupt or tampered."""


class FrameError(VssEdgeError):
    """A frame handed to Pipeline.step has the wrong type, shape, dtype or channel count."""


class SourceError(VssEdgeError):
    """A video file, image folder or camera cannot be opened or read."""


class OutputError(VssEdgeError):
    """An output cannot be written or finished: disk full, read-only filesystem, no permission."""


class CheckpointError(VssEdgeError):
    """A checkpoint file does not match the architecture it is loaded into."""
