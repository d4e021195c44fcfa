"""Protocol bodies ⇄ dict[str, numpy.ndarray] for the TF Serving REST API and KServe V2."""

from server.codecs.jsonio import CodecError, dumps, loads

__all__ = ["CodecError", "dumps", "loads"]
