"""The hardened Kubernetes base: the tokens Secret parses, is mounted where the server reads it, and the
ServiceMonitor's scrape token is the one with the metrics scope (and only that)."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import yaml

from server.admission.auth import Tokens

from ..servers import ROOT


def base() -> dict[str, dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(ROOT / "deploy" / "kubernetes" / "base")],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return {d["kind"]: d for d in yaml.safe_load_all(result.stdout) if d}


def test_tokens_secret_is_mounted_where_the_server_reads_it_and_scrapes_with_the_metrics_token() -> None:
    documents = base()
    secret = documents["Secret"]
    tokens = Tokens.parse(secret["stringData"]["tokens.yaml"], "the Secret's tokens.yaml")
    assert all(entry.name for entry in tokens.entries)
    scraper = tokens.identify(secret["stringData"]["metrics-token"])
    assert scraper.scopes == {"metrics"}  # the one plaintext token can read metrics and nothing else

    pod = documents["Deployment"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e["value"] for e in container["env"]}
    (volume,) = [v for v in pod["volumes"] if v.get("secret", {}).get("secretName") == secret["metadata"]["name"]]
    assert [item["key"] for item in volume["secret"]["items"]] == ["tokens.yaml"]  # not the scraper's token
    (mount,) = [m for m in container["volumeMounts"] if m["name"] == volume["name"]]
    assert mount["readOnly"] and env["BATCHSERVE_AUTH_TOKENS_FILE"] == f"{mount['mountPath']}/tokens.yaml"
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"  # open: auth_health is unset
    assert "BATCHSERVE_AUTH_HEALTH" not in env

    (endpoint,) = documents["ServiceMonitor"]["spec"]["endpoints"]
    credentials = endpoint["authorization"]["credentials"]
    assert endpoint["authorization"]["type"] == "Bearer"
    assert (credentials["name"], credentials["key"]) == (secret["metadata"]["name"], "metrics-token")
