"""The one exception type users see: the CLI prints its message as a single line and exits non-zero."""


class PocusError(Exception):
    """A problem the user can fix; the message names what was wrong and what to do."""


class DataError(PocusError):
    """The training/evaluation data cannot be used as given."""


class ConfigError(PocusError):
    """A flag or config-file value is invalid."""


class CheckpointError(PocusError):
    """A checkpoint or weights file is missing, corrupt or does not match the model."""
