"""Where process workers wait between engines, so that a new engine adopts them instead of loading again.

The supervisor owns the directory (in its work directory) and hands it to every engine it starts. A worker
started there listens at ``SLOT.DIGEST.PID.sock`` (``worker_identity``: the slot is its version, device and
instance; the digest, everything it was started with). An engine takes the sockets present when it starts as
the orphans of the engine before it. A pool adopts the live orphan of its slot and digest, with its model
loaded and warmed; it stops the orphans of its slot with another digest (changed settings or files) before it
starts a new worker, which frees their device. After the engine's first load it stops the orphans that no pool
adopted (a model or version gone or not loaded any more). On shutdown the supervisor stops what is left; a
worker that no engine adopts exits on its own (server/runtime/worker_adoption.py).
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from server.runtime.worker_launch import connect_worker

log = logging.getLogger(__name__)


class WorkerHome:
    """A server's worker directory, seen from one engine: the orphans it found there at its start."""

    def __init__(self, path: Path | str, supervisor: int | None = None) -> None:
        self.path = Path(path)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.supervisor = supervisor if supervisor is not None else os.getppid()
        self._orphans = set(self.path.glob("*.sock"))

    def listen_path(self, slot: str, digest: str) -> str:
        """Where a new worker of this slot and digest listens (it adds ``.PID.sock``)."""
        return str(self.path / f"{slot}.{digest}")

    def claim(self, slot: str, digest: str) -> list[Path]:
        """The orphans of this slot and digest, to adopt (the caller stops those it does not: ``stop_worker``).
        Those of this slot with another digest are stopped now."""
        mine = sorted(path for path in self._orphans if path.name.startswith(f"{slot}."))
        self._orphans.difference_update(mine)
        wanted = [path for path in mine if path.name.startswith(f"{slot}.{digest}.")]
        for path in mine:
            if path not in wanted:
                log.info("stopping worker %s of the engine before: started with other settings or files", path.name)
                stop_worker(path)
        return wanted

    def sweep(self) -> int:
        """Stop every orphan that no pool adopted; how many there were."""
        orphans, self._orphans = self._orphans, set()
        for path in sorted(orphans):
            stop_worker(path)
        if orphans:
            log.info("stopped %d worker(s) of the engine before that serve nothing now", len(orphans))
        return len(orphans)


def stop_worker(path: Path) -> None:
    """Kill the worker listening at ``path`` (found by the socket itself, never by a pid read from a name),
    and remove the socket; a socket whose worker is gone is just removed."""
    try:
        process, conn = connect_worker(path)
    except OSError:
        pass
    else:
        process.kill()
        process.close()
        conn.close()
    path.unlink(missing_ok=True)


def stop_all(directory: Path) -> int:
    """Stop every worker listening in ``directory`` (the supervisor, once its engine has stopped)."""
    paths = sorted(directory.glob("*.sock")) if directory.is_dir() else []
    for path in paths:
        stop_worker(path)
    return len(paths)
