"""Protocol bodies ⇄ dict[str, numpy.ndarray] for the TF Serving REST API and KServe V2."""

from .errors import CodecError
from .jsonio import dumps, loads

__all__ = ["CodecError", "dumps", "loads"]
