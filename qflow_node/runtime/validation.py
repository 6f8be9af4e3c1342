"""Topic validators for the daemon: every gossip message must open as a wire envelope.

`open_envelope` (qflow_node.core.envelopes) checks size caps, shape, version, kind, that
the kind travels on this topic, the sender's signature over the subnet, and the body.
Only a `Verified` envelope is delivered or forwarded; anything else is dropped at the
first hop with its reason logged at debug level.
"""

from __future__ import annotations

from typing import Any

from qflow_node.core.envelopes import Rejected, open_envelope
from qflow_node.log import get_logger
from qflow_node.net.gossip import Validator
from qflow_node.net.topics import TopicKind, topic


def _log() -> Any:
    # Looked up per use: a logger bound at import keeps the format configured then.
    return get_logger("qflow.net.gossip")


def envelope_validator(subnet: str, kind: TopicKind) -> Validator:
    """The validator for topic `/qflow/1/<subnet>/<kind>`."""
    name = topic(subnet, kind)

    def validate(data: bytes) -> bool:
        result = open_envelope(data, subnet=subnet, channel=kind)
        if isinstance(result, Rejected):
            _log().debug(
                "envelope.rejected", topic=name, reason=result.reason, error=result.message
            )
            return False
        return True

    return validate
