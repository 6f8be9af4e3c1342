"""Topic validators for the daemon: every gossip message must open as a wire envelope.

`open_envelope` (qflow_node.core.envelopes) checks size caps, shape, version, kind, that
the kind travels on this topic, the sender's signature over the subnet, and the body.
Only a `Verified` envelope is delivered or forwarded; anything else is dropped at the
first hop and counted by topic kind and reason (`Rejections`); the daemon logs the
counts when they change (`envelope.rejected`), the reason of each at debug level.
"""

from __future__ import annotations

from collections import Counter, OrderedDict
from typing import Any, Final

from qflow_node.core.envelopes import Rejected, Verified, open_envelope
from qflow_node.log import get_logger
from qflow_node.net.gossip import Validator
from qflow_node.net.topics import TopicKind, topic


def _log() -> Any:
    # Looked up per use: a logger bound at import keeps the format configured then.
    return get_logger("qflow.net.gossip")


OPENED_KEPT: Final = 4096  # validated envelopes awaiting delivery (the gossip buffer's size)


class Rejections:
    """Counts of refused envelopes, keyed `<topic kind>/<reason>` (e.g. `flows/oversize`),
    and the envelopes validated but not yet delivered: the consumer takes them opened
    (`opened`) instead of checking the signature a second time."""

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()
        self._reported: dict[str, int] = {}
        self._opened: OrderedDict[tuple[str, str, bytes], Verified[Any]] = OrderedDict()

    def opened(self, data: bytes, *, subnet: str, kind: TopicKind) -> Verified[Any] | Rejected:
        """The envelope `data` on topic (subnet, kind), opened: as its validator found it
        if it passed one here, otherwise opened now."""
        verified = self._opened.pop((subnet, kind, data), None)
        if verified is not None:
            return verified
        return open_envelope(data, subnet=subnet, channel=kind)

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
            opened = self._opened
            opened[(subnet, kind, data)] = result
            if len(opened) > OPENED_KEPT:  # validated, never delivered (our own, dropped)
                opened.popitem(last=False)
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
