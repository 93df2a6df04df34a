"""Generated secrets: one per install, shared by every process that starts with it, 0600."""

from __future__ import annotations

import multiprocessing
from pathlib import Path

from shared.settings import Settings, load_or_create_secret


def _read_key(var_dir: str) -> bytes:
    return Settings(var_dir=Path(var_dir)).link_key


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(6) as pool:
        keys = pool.map(_read_key, [str(tmp_path)] * 12)
    assert len(set(keys)) == 1
    assert keys[0] == (tmp_path / "secrets" / "link.key").read_bytes()
    assert (tmp_path / "secrets" / "link.key").stat().st_mode & 0o777 == 0o600
    assert [p.name for p in (tmp_path / "secrets").iterdir()] == ["link.key"]


def test_a_secret_reads_back_exactly_as_created(tmp_path: Path) -> None:
    # Bytes that strip() would eat at both ends: the creator and later readers must agree.
    created = load_or_create_secret(tmp_path / "s", lambda: b"\n\t key \x0b\n")
    assert created == load_or_create_secret(tmp_path / "s", lambda: b"other")
