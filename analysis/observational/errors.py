"""The one error type of the observational pipeline: bad input or an impossible request."""


class ObservationalError(ValueError):
    """Bad input or an impossible request for an observational fit; the message says which."""
