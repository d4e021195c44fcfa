"""Deployment artefacts: Dockerfile.gpu linted, Kubernetes overlays rendered and validated strictly."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..servers import ROOT

KUBE = ROOT / "deploy" / "kubernetes"
SCHEMAS = ROOT.parent / "shared" / "schemas"
BIN = Path(sys.executable).parent
CUSTOM = {
    "ScaledObject": "keda.sh_scaledobject_v1alpha1.json",
    "ServiceMonitor": "monitoring.coreos.com_servicemonitor_v1.json",
    "PrometheusRule": "monitoring.coreos.com_prometheusrule_v1.json",
    "InferenceService": "serving.kserve.io_inferenceservice_v1beta1.json",
}


def tool(name: str) -> str:
    path = BIN / name if (BIN / name).exists() else shutil.which(name)
    if path is None:
        pytest.skip(f"{name} is not installed (make test installs it with the dev extra)")
    return str(path)


def test_dockerfile_gpu_passes_hadolint():
    result = subprocess.run([tool("hadolint"), str(ROOT / "Dockerfile.gpu")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = (ROOT / "Dockerfile.gpu").read_text()
    assert "nvcr.io/nvidia/tensorflow:25.02-tf2-py3@sha256:" in text
    assert "USER 10001" in text and "HEALTHCHECK" in text and "/v2/health/ready" in text
    assert "BATCHSERVE_WORKERS=process" in text


def ecmascript_schema(name: str, tmp_path: Path) -> Path:
    """The shared schema, with Go's inline case-insensitive flag "(?i)" dropped from its patterns.

    CRD schemas are generated from Go (RE2) and a few patterns start with "(?i)", which the
    ECMAScript dialect check-jsonschema uses cannot compile, so the schema itself fails to load.
    Dropping the flag makes those patterns case-sensitive: stricter, never looser.
    """
    text = (SCHEMAS / name).read_text().replace("(?i)", "")
    path = tmp_path / name
    path.write_text(text)
    return path


def render(overlay: str) -> list[dict]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    result = subprocess.run([kubectl, "kustomize", str(KUBE / overlay)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return [d for d in yaml.safe_load_all(result.stdout) if d]


@pytest.mark.parametrize(("overlay", "kinds"), [
    ("base", {"Deployment", "Service", "PodDisruptionBudget", "ServiceMonitor", "PrometheusRule",
              "PersistentVolumeClaim"}),
    ("overlays/keda", {"Deployment", "ScaledObject"}),
    ("overlays/hpa", {"Deployment", "HorizontalPodAutoscaler", "ConfigMap"}),
    ("overlays/kserve", {"InferenceService"}),
])
def test_overlay_renders_and_validates_strictly(overlay, kinds, tmp_path):
    documents = render(overlay)
    assert kinds <= {d["kind"] for d in documents}
    core = [d for d in documents if d["kind"] not in CUSTOM]
    custom = [d for d in documents if d["kind"] in CUSTOM]
    if core:
        (tmp_path / "core.yaml").write_text(yaml.safe_dump_all(core))
        result = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", "1.30.0", "--quiet",
                                 str(tmp_path / "core.yaml")], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout + result.stderr
    if custom and not SCHEMAS.is_dir():
        pytest.skip(f"{SCHEMAS} (the shared CRD schemas) is not beside the checkout")
    for index, document in enumerate(custom):
        path = tmp_path / f"custom{index}.yaml"
        path.write_text(yaml.safe_dump(document))
        result = subprocess.run([tool("check-jsonschema"), "--schemafile",
                                 str(ecmascript_schema(CUSTOM[document["kind"]], tmp_path)), str(path)],
                                capture_output=True, text=True)
        assert result.returncode == 0, f"{document['kind']}: {result.stdout}{result.stderr}"


def test_deployment_probes_gpu_and_termination_outlast_the_drain():
    (deployment,) = [d for d in render("base") if d["kind"] == "Deployment"]
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert container["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "1"
    env = {e["name"]: e["value"] for e in container["env"]}
    pre_stop = int(container["lifecycle"]["preStop"]["exec"]["command"][-1])
    assert pod["terminationGracePeriodSeconds"] > float(env["BATCHSERVE_DRAIN_TIMEOUT_S"]) + pre_stop


def test_prometheus_rule_matches_the_rules_file():
    (rule,) = [d for d in render("base") if d["kind"] == "PrometheusRule"]
    rules = yaml.safe_load((ROOT / "deploy" / "prometheus" / "rules.yml").read_text())
    assert rule["spec"] == rules, "regenerate deploy/kubernetes/base/prometheusrule.yaml from rules.yml"


def test_validators_reject_an_unknown_field(tmp_path):
    documents = render("overlays/keda")
    deployment = next(d for d in documents if d["kind"] == "Deployment")
    scaled = next(d for d in documents if d["kind"] == "ScaledObject")
    deployment["spec"]["replicaz"] = 3
    scaled["spec"]["maxReplicas"] = 3
    (tmp_path / "core.yaml").write_text(yaml.safe_dump(deployment))
    (tmp_path / "custom.yaml").write_text(yaml.safe_dump(scaled))
    core = subprocess.run([tool("kubernetes-validate"), "--strict", "-k", "1.30.0", "--quiet",
                           str(tmp_path / "core.yaml")], capture_output=True, text=True)
    assert core.returncode != 0 and "replicaz" in core.stdout + core.stderr
    if not SCHEMAS.is_dir():
        pytest.skip(f"{SCHEMAS} is not beside the checkout")
    custom = subprocess.run([tool("check-jsonschema"), "--schemafile",
                             str(ecmascript_schema(CUSTOM["ScaledObject"], tmp_path)), str(tmp_path / "custom.yaml")],
                            capture_output=True, text=True)
    assert custom.returncode != 0 and "maxReplicas" in custom.stdout + custom.stderr
