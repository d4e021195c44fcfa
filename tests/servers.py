"""Real batchserve servers on 127.0.0.1 for the tests: the same launcher the load tests use."""

from load_tests.harness.local_server import ROOT, free_port
from load_tests.harness.local_server import LocalServer as ServerProcess

__all__ = ["ROOT", "ServerProcess", "free_port"]
