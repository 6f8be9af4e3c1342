"""A small shop on loopback: the HTTP services the order flow
(`examples/flows/order-processing.yaml`) calls under `inputs.services`.

    .venv/bin/python examples/shop.py [--port 0] [--charge-delay 1.5] [--delay 0.5]

Prints `listening http://127.0.0.1:PORT` first, then one line per business event
(`charge o-1 accepted`, `charge o-1 deduplicated`, `order o-1 confirmed`, ...), and
serves until SIGTERM or SIGINT (exit code 0).

* `POST /payments/charge` answers after `charge_delay` seconds, like a slow payment
  provider, so a flow is visibly mid-flight while it waits. Charges are deduplicated by
  the `idempotency-key` header: a retried charge (a node that took over the step after
  its holder died) gets the first charge's answer and is not charged twice.
* `GET /inventory/<order>` answers a stock level and `POST /orders/confirm` confirms the
  order (once: a repeated confirmation is answered the same and changes nothing), each
  after `delay` seconds; `POST /payments/refund` and `POST /inventory/release` answer
  `{"ok": true}` at once.

Importable: `Shop` runs the same server in a thread (`with Shop() as shop: shop.url`).
"""

from __future__ import annotations

import argparse
import http.server
import json
import signal
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final

CHARGE_DELAY: Final = 1.5  # seconds the payment provider takes to answer
DELAY: Final = 0.5  # seconds the stock and confirmation services take to answer
STOCK: Final = {"sku": "all", "available": 12}


@dataclass
class _Charge:
    answer: dict[str, Any]
    settled: threading.Event = field(default_factory=threading.Event)


class ShopServer(http.server.ThreadingHTTPServer):
    """The shop's state: charges by idempotency key, and what happened, in order."""

    daemon_threads = True

    def __init__(
        self,
        address: tuple[str, int] = ("127.0.0.1", 0),
        *,
        charge_delay: float = CHARGE_DELAY,
        delay: float = DELAY,
        say: Callable[[str], None] = print,
    ) -> None:
        super().__init__(address, ShopHandler)
        self.charge_delay = charge_delay
        self.delay = delay
        self.say = say
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)  # notified on every event
        self.charges: dict[str, _Charge] = {}
        self.confirmed: set[str] = set()
        self.events: list[str] = []  # "charge o-1 accepted: ...", ... (tests, the demo)
        self._stopping = threading.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def note(self, line: str) -> None:
        with self.changed:
            self.events.append(line)
            self.changed.notify_all()
        self.say(line)

    def wait_for(self, prefix: str, timeout: float) -> bool:
        """Whether an event starting with `prefix` happened (or does within `timeout` s)."""
        with self.changed:
            return self.changed.wait_for(
                lambda: any(line.startswith(prefix) for line in self.events), timeout
            )

    def pause(self, seconds: float) -> None:
        """A slow service answering (cut short when the shop stops)."""
        self._stopping.wait(seconds)

    def charge(self, key: str, order: str, amount: Any) -> dict[str, Any]:
        """Charge once per idempotency key; a repeat waits for and returns the first answer."""
        with self.lock:
            charge = self.charges.get(key)
            repeated = charge is not None
            if charge is None:
                number = len(self.charges) + 1
                charge = _Charge({"charge": f"ch_{number}", "order": order, "amount": amount})
                self.charges[key] = charge
        if repeated:
            self.note(f"charge {order} deduplicated (idempotency-key {key}): not charged again")
            charge.settled.wait(timeout=self.charge_delay + 5)
            return charge.answer
        self.note(f"charge {order} accepted: {amount} -> {charge.answer['charge']}")
        # The provider is slow to answer; the charge itself is already booked.
        self.pause(self.charge_delay)
        charge.settled.set()
        return charge.answer

    def confirm(self, order: str, customer: Any) -> None:
        with self.lock:
            repeated = order in self.confirmed
            self.confirmed.add(order)
        if repeated:
            self.note(f"order  {order} confirmed already: the repeat changes nothing")
        else:
            self.note(f"order  {order} confirmed for {customer}")
        self.pause(self.delay)

    def stop(self) -> None:
        self._stopping.set()


class ShopHandler(http.server.BaseHTTPRequestHandler):
    server: ShopServer
    protocol_version = "HTTP/1.1"

    def _reply(self, status: int, body: Any) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(data)))
        self.send_header("connection", "close")
        self.end_headers()
        self.close_connection = True
        try:
            self.wfile.write(data)
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            self.server.note(f"answer to {self.command} {self.path} lost: the caller is gone")

    def _body(self) -> Any:
        length = int(self.headers.get("content-length", "0") or 0)
        try:
            return json.loads(self.rfile.read(length) or b"null")
        except ValueError:
            return None

    def do_GET(self) -> None:
        if self.path.startswith("/inventory/"):
            order = self.path.removeprefix("/inventory/")
            self.server.note(f"stock  {order}: {STOCK['available']} available")
            self.server.pause(self.server.delay)
            self._reply(200, STOCK)
        else:
            self._reply(404, {"error": "not found"})

    def do_POST(self) -> None:
        body = self._body()
        fields = body if isinstance(body, dict) else {}
        order = str(fields.get("order", "?"))
        if self.path == "/payments/charge":
            key = self.headers.get("idempotency-key") or order
            self._reply(200, self.server.charge(key, order, fields.get("amount")))
        elif self.path == "/orders/confirm":
            self.server.confirm(order, fields.get("customer"))
            self._reply(200, {"ok": True, "order": order})
        elif self.path in ("/payments/refund", "/inventory/release"):
            self.server.note(f"{self.path.strip('/').replace('/', ' ')} {order}")
            self._reply(200, {"ok": True})
        else:
            self._reply(404, {"error": "not found"})

    def log_message(self, *args: Any) -> None:
        pass  # business events only (ShopServer.note)


class Shop:
    """The shop in a thread of this process: `with Shop() as shop: ... shop.url`."""

    def __init__(
        self,
        *,
        charge_delay: float = CHARGE_DELAY,
        delay: float = DELAY,
        say: Callable[[str], None] = print,
    ) -> None:
        self.server = ShopServer(charge_delay=charge_delay, delay=delay, say=say)
        self._thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return self.server.url

    def __enter__(self) -> Shop:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.stop()
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0, help="0: an OS-chosen port")
    parser.add_argument("--charge-delay", type=float, default=CHARGE_DELAY)
    parser.add_argument("--delay", type=float, default=DELAY, help="stock and confirmation")
    args = parser.parse_args(argv)

    def say(line: str) -> None:
        print(line, flush=True)

    server = ShopServer(
        ("127.0.0.1", args.port), charge_delay=args.charge_delay, delay=args.delay, say=say
    )

    def stop(signum: int, _frame: FrameType | None) -> None:
        server.stop()
        # shutdown() waits for serve_forever to return: not from its own thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    say(f"listening {server.url}")
    try:
        server.serve_forever(poll_interval=0.05)
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
