"""A worker pool for a version folder, built the way the repository builds one."""

from __future__ import annotations

from pathlib import Path

from server.models.config import ModelConfig
from server.runtime import WorkerPool, create_pool
from server.settings import Settings


def pool_for(path: Path, config: ModelConfig | None = None, settings: Settings | None = None) -> WorkerPool:
    config, settings = config or ModelConfig(), settings or Settings()
    return create_pool(config.model_spec(path, settings), config.worker_spec(settings))
