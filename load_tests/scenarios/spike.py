"""Spike: a quiet baseline, a sudden 8x burst, then baseline again: nothing may fail, tails recover."""

from locust import LoadTestShape

from load_tests.locust_common import install_thresholds, time_scale, user

TabularUser = user("tabular", "v2_binary", weight=2)
ImageUser = user("image_classifier", "v2_binary", weight=1)

install_thresholds(fail_ratio=0.0, p95_ms=2000, p99_ms=4000)


class Spike(LoadTestShape):
    """(until second, users): 8 users, 64 users, 8 users."""

    stages = ((30.0, 8), (60.0, 64), (90.0, 8))

    def tick(self) -> tuple[int, float] | None:
        scale = time_scale(self.runner.environment if self.runner else None)
        elapsed = self.get_run_time()
        for until, users in self.stages:
            if elapsed < until * scale:
                return users, 1000.0
        return None
