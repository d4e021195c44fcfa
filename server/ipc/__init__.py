"""Between front-end processes and the model engine: shared-memory arenas for tensors, a channel for messages."""
