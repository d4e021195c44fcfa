"""gRPC front end: KServe V2 (``inference.GRPCInferenceService``) and TF Serving (``PredictionService``,
``ModelService``) on one port, with health and reflection, on the HTTP server's event loop.

The package imports none of its modules, so the client's transport (``transport``, with ``protos`` and
``tensors``) loads without the server side (``server``, ``calls``, ``kserve``, ``tfserving``, ``status``).
"""
