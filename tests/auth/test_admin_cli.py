"""`video2mp3 admin create-user`: the operator's accounts share the first-account rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.auth.errors import EmailTaken
from services.cli.admin import create_user
from tests.auth.conftest import PASSWORD, fresh_database, make_settings, new_email


@pytest.mark.parametrize("backend", ["mariadb", "sqlite"])
async def test_created_accounts_are_verified_and_only_the_first_is_an_admin_unasked(
    backend: str, tmp_path: Path
) -> None:
    async with fresh_database(backend, tmp_path) as url:
        settings = make_settings(url, tmp_path / "var")
        first = await create_user(settings, new_email(), PASSWORD, admin=False)
        second = await create_user(settings, new_email(), PASSWORD, admin=False)
        asked = await create_user(settings, new_email(), PASSWORD, admin=True)
        assert (first.is_admin, second.is_admin, asked.is_admin) == (True, False, True)
        assert first.email_verified
        assert second.email_verified
        with pytest.raises(EmailTaken):
            await create_user(settings, second.email.upper(), PASSWORD, admin=False)
