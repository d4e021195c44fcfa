"""Protocol bodies ⇄ dict[str, numpy.ndarray] for the TF Serving REST API and KServe V2."""

from server.codecs.errors import CodecError
from server.codecs.jsonio import dumps, loads

__all__ = ["CodecError", "dumps", "loads"]
