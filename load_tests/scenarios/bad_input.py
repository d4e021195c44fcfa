"""Bad input: a share of malformed requests among good ones. Malformed ones must get 4xx, never 5xx,
and the good ones must keep succeeding."""

from load_tests.locust_common import BadInputUser, install_thresholds, user

TabularUser = user("tabular", "v2_binary", weight=3)
SpamUser = user("spam", "tfserving_json", weight=1)


class Malformed(BadInputUser):
    weight = 2


install_thresholds(fail_ratio=0.0, p95_ms=500, p99_ms=1000)
