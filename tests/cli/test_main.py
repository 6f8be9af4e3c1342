from __future__ import annotations

import subprocess
import sys

from click.testing import CliRunner

from qflow_node import __version__
from qflow_node.cli.main import COMMANDS, qflow


def test_version() -> None:
    result = CliRunner().invoke(qflow, ["--version"])
    assert result.exit_code == 0
    assert result.output.strip() == f"qflow, version {__version__}"


def test_help_lists_every_registered_command() -> None:
    result = CliRunner().invoke(qflow, ["--help"])
    assert result.exit_code == 0, result.output
    listed = {line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line}
    assert listed == set(COMMANDS)


def test_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(qflow, ["frobnicate"])
    assert result.exit_code == 2
    assert "No such command 'frobnicate'" in result.output


def test_sentinel_check_does_not_import_the_network_stack() -> None:
    # CI of every project runs this command; it must stay light.
    code = (
        "import sys; from qflow_node.cli.main import qflow\n"
        "try:\n    qflow(['sentinel', 'check', '--help'])\nexcept SystemExit:\n    pass\n"
        "heavy = [m for m in ('libp2p', 'wasmtime', 'trio', 'nacl') if m in sys.modules]\n"
        "print('HEAVY=' + ','.join(heavy))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.splitlines()[-1] == "HEAVY="
