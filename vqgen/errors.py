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


class SettingError(UsageError):
    """A setting whose value is not allowed, in the library's own words.

    .setting: the setting's name as the Python API spells it (steps, guidance, num_images, device);
    .value: what was given; .allowed: what would be, in plain words ("1..100", "0 or more").
    str(error) is one line naming the setting ("steps 0 is out of range; use at least 1 ...");
    a front end names it its own way with phrased(): the CLI puts its flag there ("--steps 0 ...")."""

    def __init__(self, setting: str, value, allowed: str, template: str = "{name} {value} is out of range; use {allowed}"):
        # template: the message, with {name} where the setting's name goes, {value} and {allowed}.
        self.setting, self.value, self.allowed, self.template = setting, value, allowed, template
        super().__init__(self.phrased(setting))

    def phrased(self, name: str) -> str:
        """The message with `name` for the setting (a flag, a key of a prompt file, ...)."""
        return self.template.format(name=name, value=self.value, allowed=self.allowed)
