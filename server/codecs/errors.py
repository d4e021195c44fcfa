"""The one error a codec raises."""


class CodecError(ValueError):
    """The request body cannot be decoded into tensors (HTTP 400); the message says where."""
