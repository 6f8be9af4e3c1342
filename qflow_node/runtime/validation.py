"""Topic validators for the daemon: every gossip message must open as a wire envelope.

`open_envelope` (qflow_node.core.envelopes) checks size caps, shape, version, kind, that
the kind travels on this topic, the sender's signature over the subnet, and the body.
Only a `Verified` envelope is delivered or forwarded; anything else is dropped at the
first hop and counted by topic kind and reason (`Rejections`); the daemon logs the
counts when they change (`envelope.rejected`), the reason of each at debug level.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from qflow_node.core.envelopes import Rejected, open_envelope
from qflow_node.log import get_logger
from qflow_node.net.gossip import Validator
from qflow_node.net.topics import TopicKind, topic


def _log() -> Any:
    # Looked up per use: a logger bound at import keeps the format configured then.
    return get_logger("qflow.net.gossip")


class Rejections:
    """Counts of refused envelopes, keyed `<topic kind>/<reason>` (e.g. `flows/oversize`)."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._reported: dict[str, int] = {}

    def validator(self, subnet: str, kind: TopicKind) -> Validator:
        """The validator for topic `/qflow/1/<subnet>/<kind>`."""
        name = topic(subnet, kind)

        def validate(data: bytes) -> bool:
            result = open_envelope(data, subnet=subnet, channel=kind)
            if isinstance(result, Rejected):
                self.counts[f"{kind}/{result.reason}"] += 1
                _log().debug(
                    "envelope.rejected", topic=name, reason=result.reason, error=result.message
                )
                return False
            return True

        return validate

    def changed(self) -> dict[str, int] | None:
        """The counts, if they changed since the last call (for a periodic log line)."""
        if dict(self.counts) == self._reported:
            return None
        self._reported = dict(self.counts)
        return dict(sorted(self._reported.items()))


def envelope_validator(subnet: str, kind: TopicKind) -> Validator:
    """A validator that counts nowhere (tools and tests that need no counters)."""
    return Rejections().validator(subnet, kind)
