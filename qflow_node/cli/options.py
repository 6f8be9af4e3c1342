"""Options shared by several `qflow` commands."""

from __future__ import annotations

from pathlib import Path

import click

DEFAULT_REPO = Path.home() / ".qflow"

repo_option = click.option(
    "--repo",
    "repo",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="QFLOW_REPO",
    default=DEFAULT_REPO,
    show_default="$QFLOW_REPO or ~/.qflow",
    help="The node repository (keys, config, block store).",
)
