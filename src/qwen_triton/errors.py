"""Errors that carry the offending request field, so the edge can answer INVALID_ARG naming it."""


class InvalidRequest(ValueError):
    """A request that can never be served as sent; `field` names the wire input at fault."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


class ConfigError(ValueError):
    """A deployment mistake (unfilled template, bad engine folder): fail loudly at load time."""


class Unavailable(RuntimeError):
    """The server cannot take this request now (shutting down); the client may retry elsewhere or later."""
