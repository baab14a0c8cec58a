"""The docs describe what the code does: every setting is documented, the README is runnable."""

from __future__ import annotations

import re
from pathlib import Path

from relevo.config import Settings

ROOT = Path(__file__).resolve().parents[2]


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text()
    missing = [
        name
        for name in Settings.model_fields
        if f"`{name}`" not in text or f"`RELEVO_{name.upper()}`" not in text
    ]
    assert not missing, f"settings missing from docs/configuration.md: {missing}"


def test_readme_opens_with_the_demo_and_the_test_command_ci_runs() -> None:
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```sh\n(.*?)```", readme, re.S)
    assert first_block is not None
    commands = [c for c in first_block.group(1).splitlines() if c and not c.startswith("#")]
    assert "relevo demo" in commands[0]
    ci = (ROOT / ".ci" / "run").read_text()
    assert commands[1] in ci, "the README's test command must be the one .ci/run runs"


def test_changelog_keeps_an_unreleased_section() -> None:
    assert "## [Unreleased]" in (ROOT / "CHANGELOG.md").read_text()
