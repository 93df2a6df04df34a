"""compose.yaml stays consistent with the settings the services actually read."""

from __future__ import annotations

from pathlib import Path

import yaml

from shared.settings import Settings

COMPOSE = Path(__file__).resolve().parent.parent / "compose.yaml"
NOT_SETTINGS: set[str] = set()


def test_app_environment_names_are_settings() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    known = {name.upper() for name in Settings.model_fields}
    for name, service in compose["services"].items():
        if service.get("image") != "video2mp3:latest":
            continue
        unknown = set(service["environment"]) - known - NOT_SETTINGS
        assert not unknown, f"{name}: {unknown}"
        assert service["command"][0] == "serve"
        assert service["command"][1] == name


def test_services_wait_for_healthy_dependencies() -> None:
    compose = yaml.safe_load(COMPOSE.read_text())
    for name in ("gateway", "auth", "notification", "converter"):
        for dep in compose["services"][name]["depends_on"].values():
            assert dep["condition"] == "service_healthy"
    for infra in ("mysql", "mongo", "rabbitmq", "mailpit"):
        assert "healthcheck" in compose["services"][infra]


def test_the_broker_lets_a_conversion_hold_its_message_as_long_as_the_sweep_does() -> None:
    # RabbitMQ's default consumer_timeout (30 min) would redeliver a long conversion's message
    # to a second worker while the first still runs.
    compose = yaml.safe_load(COMPOSE.read_text())
    args = compose["services"]["rabbitmq"]["environment"]["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"]
    words = args.split()
    timeout_ms = int(words[words.index("consumer_timeout") + 1])
    assert timeout_ms >= Settings.model_fields["stuck_job_hours"].default * 3600 * 1000
