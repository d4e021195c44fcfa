"""The request core: one protocol-neutral request, the service that admits, validates, batches and
accounts it, the error tree, and the numpy vocabulary every codec, client and runtime shares."""
