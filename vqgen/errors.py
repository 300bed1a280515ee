"""Errors a user can fix. The CLI prints str(error) as one line on stderr and exits non-zero."""

import errno

# OSError numbers that mean "the disk is full" (or the quota, or the file size limit, is reached).
DISK_FULL = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


class VqgenError(Exception):
    """A problem with the user's input or environment, phrased as problem plus fix."""

    exit_code = 1


class CheckpointError(VqgenError):
    """A model folder or weight file that cannot be used as it is."""


class UsageError(VqgenError):
    """An option value outside what the model or the command accepts."""

    exit_code = 2
