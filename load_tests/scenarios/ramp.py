"""Step ramp: users grow in steps (LoadTestShape) so the knee of the latency curve shows."""

from locust import LoadTestShape

from load_tests.locust_common import install_thresholds, time_scale, user

TabularUser = user("tabular", "v2_binary", weight=3)
SpamUser = user("spam", "v2_json", weight=1)

install_thresholds(fail_ratio=0.01, p95_ms=1000, p99_ms=2000)


class StepRamp(LoadTestShape):
    """+8 users every 30 s up to 64, then hold 30 s."""

    step_users, step_seconds, max_users = 8, 30.0, 64

    def tick(self) -> tuple[int, float] | None:
        step = self.step_seconds * time_scale(self.runner.environment if self.runner else None)
        elapsed = self.get_run_time()
        steps = int(elapsed // step) + 1
        if steps * self.step_users > self.max_users + self.step_users:
            return None
        return min(self.max_users, steps * self.step_users), 100.0
