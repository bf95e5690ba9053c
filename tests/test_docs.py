"""Keep the documentation true: every setting is documented, and --help matches the README's commands."""

from __future__ import annotations

import re
from pathlib import Path

from agent.config import Settings, variable_name
from mcp_bridge.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]


def test_every_setting_is_documented() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    missing = [variable_name(field) for field in Settings.model_fields if f"`{variable_name(field)}`" not in doc]
    assert missing == []


def test_readme_names_every_cli_command_as_it_runs_from_a_clone() -> None:
    """After the quickstart `voice-mcp` is not on PATH: the README writes each command in a form that runs."""
    readme = (ROOT / "README.md").read_text()
    help_text = build_parser().format_help()
    commands = re.findall(r"^    (\w+)\s{2,}", help_text, flags=re.MULTILINE)
    assert {"serve", "converse", "doctor", "stats"} <= set(commands)
    for command in commands:
        assert f"scripts/quickstart {command}" in readme, command
    assert not re.search(r"^(\$ )?voice-mcp (serve|converse|doctor|stats)", readme, flags=re.MULTILINE)  # would not run


def test_readme_one_command_setups_exist_and_ci_runs_the_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    assert "scripts/quickstart\n" in readme
    assert "scripts/test\n" in readme
    assert (ROOT / "scripts" / "quickstart").stat().st_mode & 0o111
    assert "scripts/test" in (ROOT / ".ci" / "run").read_text()
