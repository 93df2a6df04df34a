"""The first account is an admin, and only one account is first, however sign-ups race."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from tests.auth.conftest import fresh_database, is_admin, make_settings, new_email, running_auth
from tests.auth.test_signups import new_address, sign_up

RACERS = 4
ROUNDS = 3


@pytest.mark.parametrize("backend", ["mariadb", "sqlite"])
async def test_racing_sign_ups_on_a_new_installation_make_one_admin(
    backend: str, tmp_path: Path
) -> None:
    # A race is won by timing: a few new installations give a double admin every chance to show.
    for round_ in range(ROUNDS):
        # Two auth instances on one user store, as behind the gateway's balancing.
        async with (
            fresh_database(backend, tmp_path) as url,
            running_auth(make_settings(url, tmp_path / f"{round_}-one")) as one,
            running_auth(make_settings(url, tmp_path / f"{round_}-two")) as two,
        ):
            emails = [new_email() for _ in range(RACERS)]
            answers = await asyncio.gather(
                *(
                    sign_up((one, two)[n % 2], new_address(), email)
                    for n, email in enumerate(emails)
                )
            )
            assert [a.status_code for a in answers] == [201] * RACERS
            admins = [email for email in emails if await is_admin(one, email)]
            assert len(admins) == 1, (round_, admins)
            late = new_email()
            assert (await sign_up(two, new_address(), late)).status_code == 201
            assert not await is_admin(one, late)
