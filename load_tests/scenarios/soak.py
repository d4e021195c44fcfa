"""Soak: constant moderate load for a long time (default 30 min, `--run-time`): no failures, no drift."""

from load_tests.locust_common import install_thresholds, user

TabularUser = user("tabular", "v2_binary", weight=4)
SpamUser = user("spam", "tfserving_json", weight=1)
ImageUser = user("image_classifier", "v2_binary", weight=1)

install_thresholds(fail_ratio=0.0, p95_ms=500, p99_ms=1000)
