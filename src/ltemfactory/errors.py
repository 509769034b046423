"""Exceptions for bad user input. The CLI prints them as one line and exits with status 2."""


class LtemfactoryError(Exception):
    """Base class: an input (config value, file, array) is not what ltemfactory expects."""


class ConfigError(LtemfactoryError):
    """A configuration value is invalid; the message names the key path and what was expected."""


class InputError(LtemfactoryError):
    """A file or array given to ltemfactory is unreadable or malformed; the message names it."""
