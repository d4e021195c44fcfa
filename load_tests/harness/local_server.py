"""A batchserve process on 127.0.0.1 for tests, load scenarios and benchmarks, and a floor server beside it
(always stopped after use); and the facts about this machine they record: cores, pinning, CPU used."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Protocol

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the checkout: load_tests/harness/ is two levels down


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def taskset(core: str | None) -> list[str]:
    """The prefix that pins a command to ``core`` (nothing when unpinned or taskset is missing)."""
    return ["taskset", "-c", core] if core is not None and shutil.which("taskset") else []


def cpu_seconds(pid: int) -> float:
    """User plus system CPU seconds of process ``pid`` so far (all its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def machine() -> str:
    """Cores, CPU model and Python version: the header of every benchmark's table."""
    try:
        model_name = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = model_name.group(1) if model_name else "unknown CPU"
    except OSError:
        cpu = "unknown CPU"
    return f"{os.cpu_count()} cores, {cpu}, Python {sys.version.split()[0]}"


class LocalServer:
    """``batchserve serve`` in a child process on a free port; ``settings`` become ``--flags``; ``root``: the
    checkout whose server runs (another one's, to compare two trees in one run)."""

    def __init__(self, repository: Path | str, log_path: Path, core: str | None = None, root: Path = ROOT,
                 **settings: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        while settings.get("grpc_port") in (None, self.port):  # never the shared default (8001): tests run side by side
            settings["grpc_port"] = free_port()
        self.grpc_port = int(settings["grpc_port"])
        self.grpc_target = f"127.0.0.1:{self.grpc_port}"
        self.client: dict[str, Any] = {}  # httpx.Client options for the readiness check (headers, verify)
        frontends = settings.get("frontends", 1)
        self.frontends = int(frontends) if str(frontends).isdigit() else 1  # auto: at least one
        args = [*taskset(core), sys.executable, "-m", "server.tools.cli", "serve",
                "--model-repository", str(repository),
                "--host", "127.0.0.1", "--port", str(self.port)]
        for key, value in settings.items():
            args += [f"--{key.replace('_', '-')}", ",".join(map(str, value)) if isinstance(value, list) else str(value)]
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "TF_CPP_MIN_LOG_LEVEL": "2"}
        self.log_path = log_path
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen(args, cwd=root, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 180.0) -> LocalServer:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()[-5000:]}")
            try:
                # Ready, and every front end listening: a front end that is slow to start would
                # otherwise leave all connections to the others.
                with httpx.Client(**self.client) as http:
                    ready = http.get(f"{self.url}/v2/health/ready", timeout=1).status_code == 200
                if ready and self.listeners() >= self.frontends:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.stop()
        raise TimeoutError(f"server not ready after {timeout}s:\n{self.log()[-5000:]}")

    def listeners(self) -> int:
        """Sockets listening on the HTTP port: one per front end that serves (Linux; 1 elsewhere)."""
        try:
            table = Path("/proc/net/tcp").read_text().splitlines()[1:]
        except OSError:
            return 1
        port = f":{self.port:04X}"
        return sum(1 for line in table if (f := line.split())[1].endswith(port) and f[3] == "0A")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def cpu_seconds(self) -> float:
        """User plus system CPU the server process has used so far."""
        return cpu_seconds(self.process.pid)

    def batch_totals(self, model: str) -> tuple[float, float]:
        """(rows, batches) so far for ``model``, from /metrics."""
        total = count = 0.0
        for line in httpx.get(f"{self.url}/metrics").text.splitlines():
            if f'model="{model}"' not in line:
                continue
            if line.startswith("batchserve_batch_size_sum{"):
                total += float(line.rsplit(" ", 1)[1])
            elif line.startswith("batchserve_batch_size_count{"):
                count += float(line.rsplit(" ", 1)[1])
        return total, count

    def stop(self, timeout: float = 60.0) -> int:
        """SIGTERM (the server drains), then wait; kill only if it does not exit in time."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
        return self.process.returncode


class Server(Protocol):
    """What a point needs of a server, batchserve's (LocalServer) or a floor's (BareServer)."""

    url: str
    process: subprocess.Popen[bytes]

    def stop(self) -> Any: ...


class BareServer:
    """A floor server (``command PORT``) pinned to ``core`` (None: unpinned) on a free port; stopped after use."""

    def __init__(self, command: list[str], core: str | None, log_path: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self.command = " ".join([*command, str(self.port)])
        self._log = open(log_path, "wb")
        self.process = subprocess.Popen([*taskset(core), *command, str(self.port)], cwd=ROOT, stdout=self._log,
                                        stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 30.0) -> BareServer:
        """Wait until the port takes connections (raise if the process exits first)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"{self.command} exited with {self.process.returncode}:\n"
                                   f"{self.log_path.read_text(errors='replace')[-3000:]}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return self
            except OSError:
                time.sleep(0.05)
        raise TimeoutError(f"{self.command} not listening after {timeout}s")

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self._log.close()
