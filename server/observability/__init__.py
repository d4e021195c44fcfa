"""What SREs see: the Prometheus registry and its batching observer, per-version series, the front ends' merge."""
