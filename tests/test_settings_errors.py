"""Settings that do not hold stop the CLI with one line per setting, never a traceback."""

from __future__ import annotations

import os
import subprocess
import sys


def test_bad_settings_are_named_not_traced() -> None:
    env = {
        **os.environ,
        "MAX_UPLOAD_BYTES": "abc",
        "GATEWAY_PORT": "99999",
        "ACCESS_TOKEN_TTL": "0",
        "LINK_SECRET": "do-not-print-me",
    }
    done = subprocess.run(
        [sys.executable, "-m", "services.cli.main", "up"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert any(line.startswith("video2mp3: MAX_UPLOAD_BYTES: ") for line in lines), lines
    assert any(line.startswith("video2mp3: GATEWAY_PORT: ") for line in lines), lines
    assert any(line.startswith("video2mp3: ACCESS_TOKEN_TTL: ") for line in lines), lines
    assert "abc" not in done.stderr
