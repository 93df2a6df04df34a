"""compose.yaml, as `docker compose config` would see it: variables interpolated from
.env.example, validated against the Compose Specification's JSON schema (the copy that the
`check-jsonschema` dev dependency ships), then checked for what the stack promises."""

from __future__ import annotations

import copy
import importlib.resources
import json
import re
from collections.abc import Mapping
from typing import Any

import pytest
import yaml

from tests.deploy.conftest import DEPLOY, ROOT, converter_drain_seconds, setting_names

COMPOSE = ROOT / "compose.yaml"
ENV_EXAMPLE = ROOT / ".env.example"
APP_SERVICES = ("gateway", "auth", "notification", "converter")
VARIABLE = re.compile(r"\$(?:\$|\{(?P<braced>[^}]*)\}|(?P<plain>[A-Za-z_][A-Za-z0-9_]*))")


class MissingVariable(Exception):
    pass


def read_env_file(text: str) -> dict[str, str]:
    values: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.partition("=")
        assert sep, f"not NAME=value: {raw!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[name.strip()] = value
    return values


def interpolate(value: Any, env: Mapping[str, str]) -> Any:
    """Compose's ${VAR}, ${VAR:-default}, ${VAR-default}, ${VAR:?error}, ${VAR?error}, $$."""
    if isinstance(value, dict):
        return {k: interpolate(v, env) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, env) for v in value]
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        expr = match.group("braced") or match.group("plain")
        m = re.fullmatch(r"([A-Za-z_][A-Za-z0-9_]*)(?:(:?)([-?])(.*))?", expr, re.S)
        assert m, f"bad interpolation {match.group(0)!r}"
        name, colon, op, arg = m.groups()
        present = name in env and (not colon or env[name] != "")
        if present:
            return env[name]
        if op == "-":
            return interpolate(arg, env)  # type: ignore[no-any-return]
        if op == "?":
            raise MissingVariable(f"{name}: {arg}")
        return ""

    return VARIABLE.sub(one, value)


def variables_used(text: str) -> set[str]:
    names = set()
    for match in VARIABLE.finditer(text):
        expr = match.group("braced") or match.group("plain")
        if expr:
            names.add(re.split(r"[:?-]", expr, maxsplit=1)[0])
    return names


def example_env() -> dict[str, str]:
    """.env.example with every REQUIRED secret filled in, as a user would."""
    env = read_env_file(ENV_EXAMPLE.read_text())
    return {k: v or f"example{k.lower().replace('_', '')}" for k, v in env.items()}


def rendered() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text())
    result = interpolate(raw, example_env())
    assert isinstance(result, dict)
    return result


def compose_schema() -> dict[str, Any]:
    pytest.importorskip("check_jsonschema", reason="dev dependency check-jsonschema")
    vendor = importlib.resources.files("check_jsonschema.builtin_schemas.vendor")
    schema: dict[str, Any] = json.loads((vendor / "compose-spec.json").read_text())
    return schema


def schema_errors(document: dict[str, Any]) -> list[str]:
    schema = compose_schema()
    import jsonschema  # comes with check-jsonschema

    validator_cls = jsonschema.validators.validator_for(schema)
    validator = validator_cls(schema, format_checker=validator_cls.FORMAT_CHECKER)
    return [
        f"{'/'.join(map(str, e.absolute_path))}: {e.message}"
        for e in validator.iter_errors(document)
    ]


def test_compose_file_matches_the_compose_specification() -> None:
    assert schema_errors(rendered()) == []


@pytest.mark.parametrize(
    ("path", "value"),
    [
        (("services", "gateway", "depends_on", "auth", "condition"), "service_healty"),
        (("services", "converter", "deploy", "replicas"), [2]),
        (("services", "mysql", "healthcheck", "intervall"), "5s"),
        (("volumes", "blobs"), "shared"),
        (("services", "proxy", "portz"), ["8000:8080"]),
    ],
)
def test_schema_rejects_a_broken_compose_file(path: tuple[str, ...], value: object) -> None:
    document = copy.deepcopy(rendered())
    node = document
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    assert schema_errors(document), f"{path} = {value!r} was accepted"


def test_every_variable_is_documented_in_env_example() -> None:
    documented = set(read_env_file(ENV_EXAMPLE.read_text()))
    used = variables_used(COMPOSE.read_text())
    assert used - documented == set()


def test_secrets_have_no_defaults() -> None:
    """Without a .env the stack refuses to start instead of running with known passwords."""
    with pytest.raises(MissingVariable):
        interpolate(yaml.safe_load(COMPOSE.read_text()), {})
    text = COMPOSE.read_text()
    for secret in (
        "MYSQL_PASSWORD",
        "MYSQL_ROOT_PASSWORD",
        "MONGO_PASSWORD",
        "RABBITMQ_PASSWORD",
        "LINK_SECRET",
    ):
        uses = re.findall(r"\$\{" + secret + r"([^}]*)\}", text)
        assert uses, secret
        assert all(u.startswith(":?") for u in uses), f"{secret} has a default"


def test_app_services_use_settings_names_and_healthchecks() -> None:
    compose = rendered()
    known = setting_names()
    for name in APP_SERVICES:
        service = compose["services"][name]
        assert service["image"] == "video2mp3:latest"
        assert service["build"]["dockerfile"] == "deploy/Dockerfile"
        assert (ROOT / service["build"]["context"] / service["build"]["dockerfile"]).exists()
        assert service["command"][:2] == ["serve", name]
        assert set(service["environment"]) <= known, set(service["environment"]) - known
        assert service["healthcheck"]["test"] == ["CMD", "video2mp3-healthcheck"]
        for dep, condition in service["depends_on"].items():
            assert condition["condition"] == "service_healthy"
            assert "healthcheck" in compose["services"][dep], dep


def test_topology_replicas_volumes_and_proxy() -> None:
    compose = rendered()
    services = compose["services"]
    assert services["gateway"]["deploy"]["replicas"] == 2
    assert services["converter"]["deploy"]["replicas"] == 2
    assert "ports" not in services["gateway"], "replicas are reached through the proxy only"

    blob_dir = services["gateway"]["environment"]["BLOB_DIR"]
    assert services["gateway"]["environment"]["BLOB_STORE"] == "file"
    for name in ("gateway", "converter"):
        assert f"blobs:{blob_dir}" in services[name]["volumes"]
    declared = set(compose["volumes"])
    for name, service in services.items():
        for volume in service.get("volumes", []):
            source, *target = volume.split(":")
            if not target:
                continue  # an anonymous volume: each container gets its own
            if not source.startswith((".", "/")):
                assert source in declared, f"{name}: undeclared volume {source}"
            else:
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"

    # Both link-signing services share one secret; auth keeps its generated key on a volume.
    link = {services[n]["environment"]["LINK_SECRET"] for n in ("gateway", "notification")}
    assert len(link) == 1
    var_dir = services["auth"]["environment"]["VAR_DIR"]
    assert any(v.endswith(f":{var_dir}") for v in services["auth"]["volumes"])

    converter = services["converter"]
    drain = converter_drain_seconds(converter["environment"].get("CONVERTER_SHUTDOWN_GRACE"))
    assert int(converter["stop_grace_period"].rstrip("s")) >= drain + 5

    images = {n: s.get("image", "") for n, s in services.items()}
    assert images["mysql"].startswith("mysql:8.4")
    assert images["mongo"].startswith("mongo:8")
    assert images["rabbitmq"].startswith("rabbitmq:4")
    assert "management" in images["rabbitmq"]
    assert "mailpit" in images["mailpit"]
    assert all("healthcheck" in s for s in services.values())

    proxy = services["proxy"]
    assert proxy["depends_on"]["gateway"]["condition"] == "service_healthy"
    mounted = [v.split(":")[0] for v in proxy["volumes"]]
    assert "./deploy/proxy/nginx.conf" in mounted


def test_proxy_balances_gateways_and_upgrades_websockets() -> None:
    conf = (DEPLOY / "proxy" / "nginx.conf").read_text()
    assert conf.count("{") == conf.count("}")
    gateway_port = rendered()["services"]["gateway"].get("environment", {}).get("GATEWAY_PORT")
    assert re.search(rf"server gateway:{gateway_port or 8000} resolve", conf)
    assert "resolver 127.0.0.11" in conf
    assert re.search(r"proxy_set_header Upgrade \$http_upgrade;", conf)
    assert re.search(r"proxy_set_header Connection \$connection_upgrade;", conf)
    assert "proxy_http_version 1.1;" in conf
    ws = re.search(r"location = /v1/ws \{(.*?)\}", conf, re.S)
    assert ws
    assert "proxy_read_timeout 1h" in ws.group(1)
    # Uploads stream through, and nginx lets through what the gateway accepts.
    assert "proxy_request_buffering off;" in conf
    size = re.search(r"client_max_body_size (\d+)m;", conf)
    assert size
    max_upload = int(rendered()["services"]["gateway"]["environment"]["MAX_UPLOAD_BYTES"])
    assert int(size.group(1)) * 1024**2 > max_upload
    # The listener is the one the compose file publishes and health-checks.
    listen = re.search(r"listen (\d+);", conf)
    assert listen
    proxy = rendered()["services"]["proxy"]
    assert proxy["ports"][0].endswith(f":{listen.group(1)}")
    assert f"127.0.0.1:{listen.group(1)}/proxy-healthz" in " ".join(proxy["healthcheck"]["test"])
