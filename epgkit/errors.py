"""The errors a user's mistake raises: the CLI reports them in one line, without a traceback."""


class ConfigError(ValueError):
    """A mistake in the user's configuration, reported in one message without a traceback."""
