"""``python -m server.runtime.worker_process NAME``: a model worker process; what to load comes pickled on stdin
(a ``WorkerLaunch``, from server/runtime/worker_launch.py). NAME is there for ``ps`` alone."""

import pickle
import sys

from server.runtime.process_worker import worker_main

if __name__ == "__main__":
    worker_main(pickle.load(sys.stdin.buffer))
