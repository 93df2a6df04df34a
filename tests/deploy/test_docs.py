"""docs/operations.md names real settings and real files."""

from __future__ import annotations

import re

from tests.deploy.conftest import ROOT, setting_names

DOC = ROOT / "docs" / "operations.md"
# Names in the guide that are not service settings: Compose variables, Secret keys, constants,
# and the retention settings that are documented ahead of their code.
NOT_SETTINGS = {
    "HTTP_PORT",
    "MYSQL_USER",
    "MYSQL_PASSWORD",
    "MYSQL_ROOT_PASSWORD",
    "MONGO_USER",
    "MONGO_PASSWORD",
    "RABBITMQ_USER",
    "RABBITMQ_PASSWORD",
    "RABBITMQ_MANAGEMENT_URL",
    "DELIVERY_LIMIT",
    "REQUIRED",
    "SOURCE_RETENTION_DAYS",
    "OUTPUT_RETENTION_DAYS",
}


def test_settings_named_in_the_guide_exist() -> None:
    names = set(re.findall(r"`([A-Z][A-Z0-9]*(?:_[A-Z0-9]+)+)`", DOC.read_text()))
    assert names, "no settings named?"
    unknown = names - setting_names() - NOT_SETTINGS
    assert not unknown, unknown


def test_files_named_in_the_guide_exist() -> None:
    paths = set(re.findall(r"`((?:deploy|docs|tests|shared|services)/[\w./-]+)`", DOC.read_text()))
    paths |= {"compose.yaml", ".env.example"}
    missing = {p for p in paths if not (ROOT / p).exists()}
    assert not missing, missing
