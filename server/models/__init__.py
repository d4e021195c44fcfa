"""Models on disk and in memory: the repository, per-model config, model control and the load life cycle."""
