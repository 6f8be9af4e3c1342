"""The `kubo` fixture: a fresh Kubo node in a child process, or a skip saying why not.

Function scope: a node starts in ~0.2 s, and a fresh one per test keeps peers, pubsub
subscriptions and blocks from leaking between tests.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from .kubo import KuboProcess, KuboUnavailable, find_library


@pytest.fixture
def kubo(tmp_path: Path) -> Iterator[KuboProcess]:
    try:
        find_library()
    except KuboUnavailable as exc:
        pytest.skip(f"no Kubo for interop tests: {exc}")
    with KuboProcess(tmp_path / "kubo") as node:
        yield node
