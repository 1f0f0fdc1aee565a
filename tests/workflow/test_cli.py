"""The dispatcher: `gembatch-tui NAME ...` reaches the subcommands; the main command is unchanged."""

from __future__ import annotations

from pathlib import Path

import pytest
from gembatch.core.workflow.cli import SUBCOMMANDS
from gembatch.tui.launch import main as launch_main


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_each_subcommand_has_help_with_an_example_and_exit_codes(name: str, capsys) -> None:
    assert launch_main([name, "--help"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"usage: gembatch-tui {name}")
    assert f"example:\n  gembatch-tui {name}" in out
    assert "exit codes:" in out


@pytest.mark.parametrize("name", sorted(SUBCOMMANDS))
def test_bad_usage_exits_2(name: str, capsys) -> None:
    assert launch_main([name, "--no-such-flag"]) == 2
    assert f"gembatch-tui {name}: error:" in capsys.readouterr().err


def test_help_lists_the_subcommands(capsys) -> None:
    from gembatch.core.workflow.cli import main

    assert main(["help"]) == 0
    out = capsys.readouterr().out
    for name in SUBCOMMANDS:
        assert f"  {name}" in out
    assert main(["frobnicate"]) == 2
    assert "unknown subcommand 'frobnicate'" in capsys.readouterr().err


def test_the_main_command_is_unchanged(tmp_path: Path, capsys) -> None:
    # flags first: the run contract, not a subcommand
    assert launch_main(["--input", str(tmp_path / "missing"), "--output", str(tmp_path)]) == 2
    assert "folder not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        launch_main(["--help"])
    assert info.value.code == 0
    out = capsys.readouterr().out
    assert "--cost-limit-usd" in out and "subcommands" in out
