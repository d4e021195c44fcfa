"""Commands around the server: the CLI, the demo models, the GPU check and the model converter."""
