"""Gossip topic names: `/qflow/1/<subnet>/<kind>`.

The version segment lets a future wire format run beside this one on the same peers;
the subnet name is restricted so a topic string is never ambiguous (no `/`).
"""

from __future__ import annotations

import re
from typing import Final, Literal

PROTOCOL_VERSION: Final = 1
TopicKind = Literal["flows", "exec", "nodes"]
TOPIC_KINDS: Final[tuple[TopicKind, ...]] = ("flows", "exec", "nodes")
SUBNET_RE: Final = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


class TopicError(ValueError):
    """A subnet name or topic kind that cannot form a topic."""


def validate_subnet(name: str) -> str:
    """Return `name` if it is a valid subnet name, else raise TopicError."""
    if not isinstance(name, str) or not SUBNET_RE.fullmatch(name):
        raise TopicError(
            f"invalid subnet name {name!r}: use 1-64 characters from a-z 0-9 _ -, "
            "starting with a letter or digit"
        )
    return name


def topic(subnet: str, kind: TopicKind) -> str:
    """The pubsub topic for one kind of traffic in one subnet."""
    if kind not in TOPIC_KINDS:
        raise TopicError(f"unknown topic kind {kind!r} (use one of {', '.join(TOPIC_KINDS)})")
    return f"/qflow/{PROTOCOL_VERSION}/{validate_subnet(subnet)}/{kind}"


def subnet_topics(subnet: str) -> tuple[str, ...]:
    """Every topic a member of `subnet` subscribes to."""
    return tuple(topic(subnet, kind) for kind in TOPIC_KINDS)
