"""deploy/k8s: the base and the dev overlay render with `kubectl kustomize`, every object is
valid for Kubernetes (the JSON schemas that `kubernetes-validate` ships, offline; KEDA's objects
against tests/deploy/schemas/keda.schema.json), and the wiring holds: probes, settings names,
Secret keys, the KEDA trigger on the job queue, graceful shutdown."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.topology import Topology
from tests.deploy.conftest import K8S, converter_drain_seconds, load_yaml_documents, setting_names

KUBERNETES_VERSIONS = ("1.30", "1.33")
SERVICES = {"gateway": 8000, "auth": 8001, "notification": 8002, "converter": 8003}
Doc = dict[str, Any]


def kustomize_command() -> list[str]:
    if shutil.which("kubectl"):
        return ["kubectl", "kustomize"]
    if shutil.which("kustomize"):
        return ["kustomize", "build"]
    pytest.skip("neither kubectl nor kustomize is installed")


def kustomize(directory: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*kustomize_command(), str(directory)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@cache
def render(name: str) -> tuple[Doc, ...]:
    directory = K8S / ("base" if name == "base" else f"overlays/{name}")
    result = kustomize(directory)
    assert result.returncode == 0, result.stderr
    return tuple(load_yaml_documents(result.stdout))


def one(docs: tuple[Doc, ...] | list[Doc], kind: str, name: str) -> Doc:
    found = [d for d in docs if d["kind"] == kind and d["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def keda_errors(doc: Doc) -> list[str]:
    jsonschema = pytest.importorskip("jsonschema", reason="comes with kubernetes-validate")

    schema = json.loads((Path(__file__).parent / "schemas" / "keda.schema.json").read_text())
    root = {"$ref": f"#/$defs/{doc['kind']}", "$defs": schema["$defs"]}
    validator = jsonschema.Draft202012Validator(root)
    return [f"{list(e.absolute_path)}: {e.message}" for e in validator.iter_errors(doc)]


def validation_errors(doc: Doc) -> list[str]:
    kv = pytest.importorskip("kubernetes_validate", reason="dev dependency kubernetes-validate")
    if doc["apiVersion"].startswith("keda.sh/"):
        assert doc["kind"] in ("ScaledObject", "TriggerAuthentication"), doc["kind"]
        return keda_errors(doc)
    errors = []
    for version in KUBERNETES_VERSIONS:
        try:
            kv.validate(doc, version, strict=True)
        except kv.ValidationError as exc:
            errors.append(f"{version} {doc['kind']}/{doc['metadata']['name']}: {exc.message}")
    return errors


@pytest.mark.parametrize("overlay", ["base", "dev"])
def test_rendered_manifests_are_valid(overlay: str) -> None:
    docs = render(overlay)
    assert docs
    errors = [e for doc in docs for e in validation_errors(doc)]
    assert errors == []


def test_the_secret_template_is_a_valid_secret() -> None:
    docs = load_yaml_documents((K8S / "base" / "secret.example.yaml").read_text())
    assert [d["kind"] for d in docs] == ["Secret"]
    assert validation_errors(docs[0]) == []


def _deployment(docs: tuple[Doc, ...], name: str) -> Doc:
    return copy.deepcopy(one(docs, "Deployment", name))


@pytest.mark.parametrize(
    ("where", "value"),
    [
        (("spec", "template", "spec", "containers", 0, "ports", 0, "containerPort"), "8000"),
        (("spec", "template", "spec", "containers", 0, "livenessProbe", "httpGet"), "/healthz"),
        (("spec", "template", "spec", "containers", 0, "resources", "limits", "cpu"), ["1"]),
        (("spec", "template", "spec", "terminationGracePeriod"), 45),
        (("spec", "selector", "matchLabels"), "gateway"),
    ],
)
def test_validation_rejects_a_broken_deployment(where: tuple[Any, ...], value: object) -> None:
    doc = _deployment(render("base"), "gateway")
    node: Any = doc
    for key in where[:-1]:
        node = node[key]
    node[where[-1]] = value
    assert validation_errors(doc), f"{where} = {value!r} was accepted"


@pytest.mark.parametrize(
    ("kind", "mutate"),
    [
        ("ScaledObject", lambda d: d["spec"].update(minReplicas=0)),
        ("ScaledObject", lambda d: d["spec"]["triggers"][0].update(metadata={"value": 2})),
        ("ScaledObject", lambda d: d["spec"].pop("scaleTargetRef")),
        ("TriggerAuthentication", lambda d: d["spec"]["secretTargetRef"][0].pop("key")),
    ],
)
def test_keda_schema_rejects_broken_objects(kind: str, mutate: Any) -> None:
    doc = copy.deepcopy(next(d for d in render("base") if d["kind"] == kind))
    mutate(doc)
    assert keda_errors(doc)


def _base_from(overlay: Path) -> str:
    """kustomize takes bases by relative path only."""
    return os.path.relpath(K8S / "base", overlay)


def test_kustomize_fails_on_a_broken_overlay(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump({"resources": [_base_from(overlay), "missing.yaml"]})
    )
    result = kustomize(overlay)
    assert result.returncode != 0
    assert "missing.yaml" in result.stderr


def test_an_overlay_that_breaks_a_field_renders_but_does_not_validate(tmp_path: Path) -> None:
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    patch = [
        {
            "op": "replace",
            "path": "/spec/template/spec/containers/0/ports/0/containerPort",
            "value": "http",
        }
    ]
    (overlay / "kustomization.yaml").write_text(
        yaml.safe_dump(
            {
                "resources": [_base_from(overlay)],
                "patches": [
                    {
                        "target": {"kind": "Deployment", "name": "converter"},
                        "patch": yaml.safe_dump(patch),
                    }
                ],
            }
        )
    )
    result = kustomize(overlay)
    assert result.returncode == 0, result.stderr
    converter = one(load_yaml_documents(result.stdout), "Deployment", "converter")
    assert validation_errors(converter)


def _config(docs: tuple[Doc, ...]) -> dict[str, str]:
    maps = [d for d in docs if d["kind"] == "ConfigMap"]
    assert len(maps) == 1
    data: dict[str, str] = maps[0]["data"]
    return data


def _secret_keys(overlay: str) -> set[str]:
    if overlay == "base":
        template = load_yaml_documents((K8S / "base" / "secret.example.yaml").read_text())[0]
        return set(template["stringData"])
    secret = one(render(overlay), "Secret", "video2mp3-secrets")
    return set(secret.get("data", {})) | set(secret.get("stringData", {}))


@pytest.mark.parametrize("overlay", ["base", "dev"])
def test_services_are_wired_to_settings_probes_and_secrets(overlay: str) -> None:
    docs = render(overlay)
    config = _config(docs)
    known = setting_names()
    assert set(config) <= known, set(config) - known
    assert config["BLOB_STORE"] == "gridfs", "pods share nothing but MongoDB"
    secret_keys = _secret_keys(overlay)
    config_name = next(d["metadata"]["name"] for d in docs if d["kind"] == "ConfigMap")

    for name, port in SERVICES.items():
        deployment = one(docs, "Deployment", name)
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        assert container["args"] == ["serve", name, "--port", str(port)]
        assert container["ports"] == [{"name": "http", "containerPort": port}]
        assert pod["enableServiceLinks"] is False, "service links would inject NAME_PORT=tcp://"
        assert container["envFrom"] == [{"configMapRef": {"name": config_name}}]
        env_names = {e["name"] for e in container.get("env", [])}
        assert env_names <= known, env_names - known
        for env in container.get("env", []):
            ref = env["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "video2mp3-secrets", ref
            assert ref["key"] in secret_keys, ref

        assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "http"}
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        resources = container["resources"]
        assert {"cpu", "memory"} <= set(resources["requests"]), name
        assert "memory" in resources["limits"], name

        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        assert security["allowPrivilegeEscalation"] is False
        assert security["capabilities"]["drop"] == ["ALL"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["runAsUser"] != 0
        volumes = {v["name"]: v for v in pod["volumes"]}
        mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
        for path in ("/tmp", config["VAR_DIR"]):
            assert path in mounts, f"{name}: nothing writable at {path}"
            assert "emptyDir" in volumes[mounts[path]]

        service = one(docs, "Service", name)
        assert (
            service["spec"]["selector"].items()
            <= deployment["spec"]["template"]["metadata"]["labels"].items()
        )
        assert service["spec"]["ports"][0]["targetPort"] == "http"

    # Only the gateway needs the link key to verify links; only auth sees the JWT key.
    def env_of(name: str) -> set[str]:
        container = one(docs, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
        return {e["name"] for e in container.get("env", [])}

    assert "JWT_PRIVATE_KEY" not in env_of("gateway") | env_of("converter") | env_of("notification")
    assert "LINK_SECRET" in env_of("gateway") & env_of("notification")
    if overlay == "base":
        assert "JWT_PRIVATE_KEY" in env_of("auth"), "every auth replica must sign with one key"


@pytest.mark.parametrize("overlay", ["base", "dev"])
def test_converter_scales_on_the_job_queue_and_drains(overlay: str) -> None:
    docs = render(overlay)
    config = _config(docs)
    converter = one(docs, "Deployment", "converter")
    assert "replicas" not in converter["spec"], "KEDA owns the replica count"
    grace = converter["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= converter_drain_seconds(config.get("CONVERTER_SHUTDOWN_GRACE")) + 5

    scaled = one(docs, "ScaledObject", "converter")
    assert scaled["spec"]["scaleTargetRef"]["name"] == "converter"
    assert scaled["spec"]["minReplicaCount"] == 0
    assert scaled["spec"]["maxReplicaCount"] >= 1
    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "rabbitmq"
    meta = trigger["metadata"]
    assert meta["queueName"] == Topology(config.get("AMQP_PREFIX", "video2mp3")).jobs_queue
    assert meta["mode"] == "QueueLength"
    assert meta["protocol"] == "http", "only the management API counts unacknowledged jobs"
    assert meta["value"] == config["CONVERTER_CONCURRENCY"], "one converter per N queued jobs"

    auth = one(docs, "TriggerAuthentication", trigger["authenticationRef"]["name"])
    for ref in auth["spec"]["secretTargetRef"]:
        assert ref["name"] == "video2mp3-secrets"
        assert ref["key"] in _secret_keys(overlay)
    assert {r["parameter"] for r in auth["spec"]["secretTargetRef"]} == {"host"}


@pytest.mark.parametrize("overlay", ["base", "dev"])
def test_gateway_autoscaling_disruption_budgets_and_ingress(overlay: str) -> None:
    docs = render(overlay)
    gateway = one(docs, "Deployment", "gateway")
    assert "replicas" not in gateway["spec"], "the HPA owns the replica count"
    grace = gateway["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert grace >= 40, "uvicorn gives open requests 35 s, after a 5 s preStop pause"

    hpa = one(docs, "HorizontalPodAutoscaler", "gateway")
    assert hpa["spec"]["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "gateway",
    }
    assert 1 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]

    for name in SERVICES:
        pdb = one(docs, "PodDisruptionBudget", name)
        labels = one(docs, "Deployment", name)["spec"]["template"]["metadata"]["labels"]
        assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()

    ingress = one(docs, "Ingress", "gateway")
    annotations = ingress["metadata"]["annotations"]
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-read-timeout"]) >= 3600
    assert int(annotations["nginx.ingress.kubernetes.io/proxy-send-timeout"]) >= 3600
    assert annotations["nginx.ingress.kubernetes.io/proxy-request-buffering"] == "off"
    body = annotations["nginx.ingress.kubernetes.io/proxy-body-size"]
    assert body.endswith("m")
    assert int(body[:-1]) * 1024**2 > int(_config(docs)["MAX_UPLOAD_BYTES"])
    backend = ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": "gateway", "port": {"name": "http"}}


def test_dev_overlay_brings_its_backing_services() -> None:
    docs = render("dev")
    namespaces = {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"}
    assert namespaces == {"video2mp3-dev"}
    for name in ("mongo", "rabbitmq", "mysql", "mailpit"):
        one(docs, "Service", name)
    secret = one(docs, "Secret", "video2mp3-secrets")
    assert "JWT_PRIVATE_KEY" not in secret.get("data", {})
    auth_env = one(docs, "Deployment", "auth")["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {e["name"] for e in auth_env} == {"DATABASE_URL"}
    for deployment in (d for d in docs if d["kind"] == "Deployment"):
        assert (
            deployment["spec"]["template"]["spec"]["containers"][0]["image"] != "video2mp3:latest"
        )
