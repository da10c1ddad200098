"""The data layer's one error type."""


class DataError(ValueError):
    """Bad data input; the message names the source or file and what was expected (exit code 2)."""
