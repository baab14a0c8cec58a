from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest

from relevo.config import load_settings
from relevo.logs import configure_logging


def test_defaults_are_the_embedded_shape(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("RELEVO_STORE_URL", "RELEVO_PORT", "RELEVO_HOST", "RELEVO_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert settings.store_url == "sqlite:///./relevo.db"
    assert settings.stream_url == "embedded://"
    assert (settings.host, settings.port) == ("127.0.0.1", 8000)
    assert settings.max_event_bytes == 32 * 1024
    assert settings.max_request_bytes == 500 * 1024
    assert settings.max_batch_events == 2500
    assert settings.dedup_window_seconds == 7 * 24 * 3600


def test_file_then_environment_then_arguments(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "relevo.toml"
    config.write_text(
        "port = 9001\nmax_batch_events = 10\nidentity_limits = { anonymous_id = 5 }\n"
    )
    monkeypatch.setenv("RELEVO_CONFIG", str(config))
    monkeypatch.setenv("RELEVO_MAX_BATCH_EVENTS", "20")
    settings = load_settings(host="0.0.0.0")
    assert settings.port == 9001  # from the file
    assert settings.max_batch_events == 20  # the environment beats the file
    assert settings.host == "0.0.0.0"  # an argument beats both
    assert settings.identity_limit("anonymous_id") == 5
    assert settings.identity_limit("phone") == settings.default_identity_limit


def test_unknown_keys_in_the_file_are_errors(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "relevo.toml"
    config.write_text("prot = 9001\n")
    monkeypatch.setenv("RELEVO_CONFIG", str(config))
    with pytest.raises(ValueError, match="prot"):
        load_settings()


def test_logs_are_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("INFO")
        logging.getLogger("relevo.test").warning('odd "input"\nwith a second line')
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, "a newline in a message must not forge a second log line"
    record = json.loads(lines[0])
    assert record["level"] == "WARNING"
    assert record["logger"] == "relevo.test"
    assert record["message"] == 'odd "input"\nwith a second line'


def test_a_server_collects_garbage_seldom_and_hands_the_gil_over_often() -> None:
    import subprocess
    import sys

    # in a child process: the settings are process-wide
    script = (
        "import gc, sys; from relevo._runtime import tune_for_server, YOUNG_THRESHOLD;"
        "tune_for_server();"
        "print(gc.get_threshold()[0] == YOUNG_THRESHOLD, gc.get_freeze_count() > 0,"
        " sys.getswitchinterval() < 0.002)"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    )
    assert done.stdout.split() == ["True", "True", "True"]
