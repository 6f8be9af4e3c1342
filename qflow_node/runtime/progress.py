"""A live progress display of a run (rich, on stderr): one line per step instance."""

from __future__ import annotations

from typing import IO

from rich.console import Console
from rich.live import Live
from rich.table import Table

from qflow_node.core.engine import Event, ExecState
from qflow_node.core.flow import FlowIR

_STYLE = {"completed": "green", "failed": "red", "retry": "yellow", "started": "cyan"}


class Progress:
    def __init__(self, ir: FlowIR, stream: IO[str]) -> None:
        self.name = ir["name"]
        self.console = Console(file=stream, stderr=True)
        self.live = Live(console=self.console, refresh_per_second=10, transient=False)
        self.state: ExecState | None = None
        self.started = False

    def stop(self) -> None:
        if not self.started:
            return  # nothing ran: no empty table
        self.live.update(self._table())
        self.live.stop()
        if not self.console.is_terminal:
            self.console.line()  # the last frame ends without a newline off a terminal

    def update(self, event: Event, state: ExecState) -> None:
        self.state = state
        if not self.started:
            self.live.start()
            self.started = True
        self.live.update(self._table())

    def _table(self) -> Table:
        state = self.state
        title = f"{self.name}: {state.status if state is not None else 'starting'}"
        table = Table(title=title, show_header=True, header_style="bold")
        table.add_column("step")
        table.add_column("status")
        table.add_column("attempt", justify="right")
        table.add_column("detail", overflow="fold")
        if state is not None:
            for name, inst in state.instances.items():
                detail = ""
                if inst.error is not None:
                    detail = f"{inst.error['kind']}: {inst.error['message']}"
                style = _STYLE.get(inst.status, "")
                table.add_row(name, f"[{style}]{inst.status}[/]", str(inst.attempt), detail)
        return table
