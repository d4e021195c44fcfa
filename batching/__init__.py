"""An asyncio dynamic batcher for numpy tensors: stdlib and numpy only."""

from .batcher import Batcher, RunBatch, Ticket
from .clock import Clock, FakeClock, LoopClock
from .config import BatchConfig, RaggedOutput
from .cost_model import CostModel
from .errors import (
    BatcherClosed,
    BatchingError,
    BatchOutputError,
    ComputeLost,
    DeadlineExceeded,
    InvalidBatchConfig,
    InvalidRequest,
    PoisonInput,
    PredictedLate,
    QueueFull,
)
from .observer import BatchObserver, NullObserver, RejectReason
from .policy import Dispatch, QueueSnapshot, Wait, decide, should_wake
from .request import Delivered, Delivery
from .tensors import TimedOutputs

__all__ = [
    "BatchConfig", "BatchObserver", "BatchOutputError", "Batcher", "BatcherClosed", "BatchingError", "Clock",
    "ComputeLost", "CostModel", "DeadlineExceeded", "Delivered", "Delivery", "Dispatch", "FakeClock",
    "InvalidBatchConfig", "InvalidRequest", "LoopClock", "NullObserver", "PoisonInput", "PredictedLate", "QueueFull",
    "QueueSnapshot", "RaggedOutput", "RejectReason", "RunBatch", "Ticket", "TimedOutputs", "Wait", "decide",
    "should_wake",
]
