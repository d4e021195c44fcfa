"""Errors raised by the batcher.

Exception tree::

    BatchingError
    ├── InvalidBatchConfig (also ValueError)   a BatchConfig field is out of range
    ├── InvalidRequest (also ValueError)        inputs of one request disagree on rows, or are empty
    ├── QueueFull                               rejected at submit: the queue holds max_queue_size rows
    │   └── PredictedLate                       rejected at submit (scheduling: slo): it would finish after its deadline
    ├── DeadlineExceeded                        the request's deadline passed before its batch ran
    ├── BatcherClosed                           submit after close(), or dropped by close(drain=False)
    ├── BatchOutputError                        run_batch returned the wrong outputs for a batch
    └── PoisonInput                             the request's rows kill the worker on their own; never run again
    ComputeLost (RuntimeError)                  raised BY run_batch: the worker died or hung; the batch may rerun

Errors raised by ``run_batch`` itself reach every request of that batch unchanged, except
ComputeLost: the batch is run again (``BatchConfig.retry_lost_batches``), then bisected.
"""

from __future__ import annotations


class BatchingError(Exception):
    """Base class of every error the batcher raises on its own."""


class InvalidBatchConfig(BatchingError, ValueError):
    """A configuration value is invalid; the message names the field."""


class InvalidRequest(BatchingError, ValueError):
    """The request's tensors cannot be batched (no inputs, no rows, rows disagree)."""


class QueueFull(BatchingError):
    """The queue cannot take the request's rows; retry after ``retry_after`` seconds (HTTP 503).

    ``retry_after`` is the batcher's prediction of how long its queue takes to drain.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class PredictedLate(QueueFull):
    """Refused at submit by the SLO scheduler: with the rows ahead of it, the request was predicted
    to finish after its deadline (HTTP 503; ``retry_after``: the predicted drain of the queue)."""


class DeadlineExceeded(BatchingError):
    """The deadline passed while the request was queued; the model never saw it (HTTP 504)."""


class BatcherClosed(BatchingError):
    """The batcher no longer accepts work (HTTP 503)."""


class BatchOutputError(BatchingError):
    """run_batch broke its contract: a missing output or a wrong row count."""


class PoisonInput(BatchingError):
    """The request's input crashed (or hung) the worker twice, the second time alone: it is not run
    again, and identical rows are refused for ``BatchConfig.poison_quarantine`` seconds."""


class ComputeLost(RuntimeError):
    """For ``run_batch`` to raise (or subclass) when the worker running the batch died or hung.

    Inference is a pure function of its inputs, so the batcher may run such a batch again.
    """
