"""A short smoke run of the locust scenarios: they run, write reports, and fail when thresholds are missed."""

from __future__ import annotations

import csv
import subprocess
import sys

import pytest

from ..servers import ROOT, free_port


def run_scenario(scenario: str, host: str, output) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "load_tests.run", scenario, "--smoke", "--host", host,
                           "--run-time", "4s", "--output", str(output)], cwd=ROOT, capture_output=True, text=True,
                          timeout=180)


@pytest.mark.parametrize("scenario", ["steady", "bad_input"])
def test_scenario_smoke_run_meets_its_thresholds(demo_server, tmp_path, scenario):
    result = run_scenario(scenario, demo_server.url, tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert "thresholds met" in result.stderr
    with open(tmp_path / f"{scenario}_stats.csv") as handle:
        rows = {row["Name"]: row for row in csv.DictReader(handle)}
    assert int(rows["Aggregated"]["Request Count"]) > 50
    assert int(rows["Aggregated"]["Failure Count"]) == 0
    assert (tmp_path / f"{scenario}.html").stat().st_size > 1000


def test_missed_thresholds_exit_non_zero(tmp_path):
    result = run_scenario("steady", f"http://127.0.0.1:{free_port()}", tmp_path)  # nothing listens there
    assert result.returncode != 0
    assert "thresholds missed" in result.stderr
