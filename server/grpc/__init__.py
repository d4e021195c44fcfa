"""gRPC front end: KServe V2 (``inference.GRPCInferenceService``) and TF Serving (``PredictionService``,
``ModelService``) on one port, with health and reflection, on the HTTP server's event loop."""

from .server import build_server, grpc_serving
from .status import grpc_error

__all__ = ["build_server", "grpc_error", "grpc_serving"]
