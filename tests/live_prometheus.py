"""A real Prometheus for a test: started on a free port with the test's configuration, ready before it is used,
stopped afterwards. Prometheus answers 503 until its storage is open; nothing asks it anything before then."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from .observe import wait_until
from .servers import free_port

needs_prometheus = pytest.mark.skipif(
    not (shutil.which("prometheus") and shutil.which("promtool")),
    reason="prometheus/promtool not installed (make test installs Debian's prometheus package)",
)


@contextmanager
def live_prometheus(directory: Path, config: str, *flags: str, timeout: float = 60.0) -> Iterator[str]:
    """Run Prometheus with ``config`` (prometheus.yml's text) from ``directory``; yield its URL once it is ready."""
    (directory / "prometheus.yml").write_text(config)
    url = f"http://127.0.0.1:{free_port()}"
    log_path = directory / "prometheus.log"
    with open(log_path, "wb") as log:
        prometheus = subprocess.Popen(
            ["prometheus", f"--config.file={directory / 'prometheus.yml'}", f"--storage.tsdb.path={directory / 'data'}",
             f"--web.listen-address={url.removeprefix('http://')}", *flags], stdout=log, stderr=subprocess.STDOUT)
    try:
        _wait_ready(url, prometheus, log_path, timeout)
        yield url
    finally:
        prometheus.terminate()
        prometheus.wait(30)


def _wait_ready(url: str, prometheus: subprocess.Popen[bytes], log_path: Path, timeout: float) -> None:
    def ready() -> bool:
        if prometheus.poll() is not None:
            pytest.fail(f"Prometheus exited ({prometheus.returncode}):\n{log_path.read_text()[-3000:]}")
        return httpx.get(f"{url}/-/ready", timeout=5).status_code == 200

    try:
        wait_until(ready, "Prometheus to answer /-/ready", timeout)
    except AssertionError as error:
        pytest.fail(f"{error}:\n{log_path.read_text()[-3000:]}")


def query(url: str, promql: str) -> list[dict]:
    """The result of an instant query (an error status fails the test with Prometheus's message)."""
    response = httpx.get(f"{url}/api/v1/query", params={"query": promql}, timeout=5)
    response.raise_for_status()
    return response.json()["data"]["result"]  # type: ignore[no-any-return]
