"""Steady: constant users on the compute-bound and overhead-bound models, V2 binary (the client default)."""

from load_tests.locust_common import install_thresholds, user

ImageUser = user("image_classifier", "v2_binary", weight=1)
TabularUser = user("tabular", "v2_binary", weight=3)

install_thresholds(fail_ratio=0.0, p95_ms=500, p99_ms=1000)
