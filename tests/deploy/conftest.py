"""Shared helpers for the deployment checks: paths, YAML loading, the settings' names."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"


def setting_names() -> set[str]:
    """Every environment name the services read (shared/settings.py)."""
    return {name.upper() for name in Settings.model_fields}


def load_yaml_documents(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def converter_drain_seconds(configured: str | None = None) -> float:
    """Longest a converter takes to stop on SIGTERM: the grace for running jobs, then 5 s for
    the cancelled ones to hand their messages back (services/converter/worker.py)."""
    default = Settings.model_fields["converter_shutdown_grace"].default
    return float(configured if configured is not None else default) + 5


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "image: builds and runs the container image (tests/deploy/test_image_run.py)"
    )
