"""Errors raised by the batcher.

Exception tree::

    BatchingError
    ├── InvalidBatchConfig (also ValueError)   a BatchConfig field is out of range
    ├── InvalidRequest (also ValueError)        inputs of one request disagree on rows, or are empty
    ├── QueueFull                               rejected at submit: the queue holds max_queue_size rows
    ├── DeadlineExceeded                        the request's deadline passed before its batch ran
    ├── BatcherClosed                           submit after close(), or dropped by close(drain=False)
    └── BatchOutputError                        run_batch returned the wrong outputs for a batch

Errors raised by ``run_batch`` itself reach every request of that batch unchanged.
"""

from __future__ import annotations


class BatchingError(Exception):
    """Base class of every error the batcher raises on its own."""


class InvalidBatchConfig(BatchingError, ValueError):
    """A configuration value is invalid; the message names the field."""


class InvalidRequest(BatchingError, ValueError):
    """The request's tensors cannot be batched (no inputs, no rows, rows disagree)."""


class QueueFull(BatchingError):
    """The queue cannot take the request's rows; retry later (HTTP 503)."""


class DeadlineExceeded(BatchingError):
    """The deadline passed while the request was queued; the model never saw it (HTTP 504)."""


class BatcherClosed(BatchingError):
    """The batcher no longer accepts work (HTTP 503)."""


class BatchOutputError(BatchingError):
    """run_batch broke its contract: a missing output or a wrong row count."""
