"""batchserve: a dynamic-batching inference server for TensorFlow SavedModels."""

__version__ = "0.1.0"
__all__ = ["__version__"]
