"""Node configuration: the file `qflow init` writes, overrides, and precise errors."""

from __future__ import annotations

import random
import tomllib
from pathlib import Path

import pytest

from qflow_node.cli.init_cmd import DEFAULT_CONFIG
from qflow_node.net.bootstrap import Backoff
from qflow_node.net.topics import TopicError, subnet_topics, topic
from qflow_node.runtime.config import ConfigError, Overrides, load_config, parse_config

PEER = "12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN"


def test_the_default_config_loads() -> None:
    config = parse_config(tomllib.loads(DEFAULT_CONFIG))
    assert [str(a) for a in config.listen] == ["/ip4/127.0.0.1/tcp/0"]
    assert config.bootstrap == ()
    assert config.subnets == ("default",)
    assert config.max_block_size == 1 << 20
    assert config.gossip.heartbeat_interval == 1


def test_command_line_values_replace_the_file_lists(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(DEFAULT_CONFIG, encoding="utf-8")
    config = load_config(
        path,
        Overrides(
            listen=["/ip4/0.0.0.0/tcp/4001"],
            bootstrap=[f"/ip4/192.0.2.7/tcp/4001/p2p/{PEER}"],
            subnets=["dao-1", "dao-1", "team"],
        ),
    )
    assert [str(a) for a in config.listen] == ["/ip4/0.0.0.0/tcp/4001"]
    assert [str(a) for a in config.bootstrap] == [f"/ip4/192.0.2.7/tcp/4001/p2p/{PEER}"]
    assert config.subnets == ("dao-1", "team")


def test_every_setting_can_be_given(tmp_path: Path) -> None:
    text = """
[node]
listen = ["/ip6/::1/tcp/4001"]
shutdown_timeout = 3
[store]
max_block_size = 2097152
[net]
max_connections = 50
max_connections_per_peer = 1
dial_timeout = 2.5
[gossip]
heartbeat_interval = 2
degree = 3
degree_low = 2
degree_high = 5
max_messages_per_second = 0
max_message_size = 65536
[membership]
heartbeat_interval = 0.5
"""
    config = parse_config(tomllib.loads(text))
    assert config.shutdown_timeout == 3.0
    assert config.heartbeat_interval == 0.5
    assert config.limits.max_connections == 50
    assert config.limits.to_libp2p().max_connections_per_peer == 1
    assert (config.gossip.degree_low, config.gossip.degree, config.gossip.degree_high) == (2, 3, 5)
    assert config.gossip.max_messages_per_second == 0.0


@pytest.mark.parametrize(
    ("text", "overrides", "message"),
    [
        ("[node]\nlisten = []", Overrides(), "[node] listen: at least one listen address"),
        ('[node]\nlisten = "/ip4/127.0.0.1/tcp/0"', Overrides(), "must be a list of strings"),
        ('[node]\nlisten = ["nope"]', Overrides(), "listen[0]: 'nope' is not a valid multiaddr"),
        ('[node]\nlisten = ["/ip4/1.2.3.4/udp/1"]', Overrides(), "is not a TCP listen address"),
        ("", Overrides(listen=["/dns4/x/tcp/1"]), "--listen[0]: '/dns4/x/tcp/1' is not a TCP"),
        ("", Overrides(listen=["/ip4/127.0.0.1/tcp/0"], bootstrap=["/ip4/127.0.0.1/tcp/1"]),
         "--bootstrap[0]: '/ip4/127.0.0.1/tcp/1' must be a TCP address ending in the peer id"),
        ('[node]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nsubnets = ["Bad/Name"]', Overrides(),
         "[node] subnets[0]: invalid subnet name 'Bad/Name'"),
        ('[node]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nsubnets = []', Overrides(),
         "at least one subnet"),
        ('[node]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\nlisen = []', Overrides(),
         "[node]: unknown key 'lisen'"),
        ("[nodes]", Overrides(), "unknown section [nodes]"),
        ("[gossip]\ndegree = true", Overrides(listen=["/ip4/127.0.0.1/tcp/0"]),
         "[gossip] degree: must be an integer, got True"),
        ("[gossip]\ndegree_low = 9", Overrides(listen=["/ip4/127.0.0.1/tcp/0"]),
         "degree_low <= degree <= degree_high"),
        ("[net]\ndial_timeout = 0", Overrides(listen=["/ip4/127.0.0.1/tcp/0"]),
         "[net] dial_timeout: must be at least 0.1"),
        ("[store]\nmax_block_size = 3000000", Overrides(listen=["/ip4/127.0.0.1/tcp/0"]),
         "exceeds 2097152"),
        ("[membership]\nheartbeat_interval = 0", Overrides(listen=["/ip4/127.0.0.1/tcp/0"]),
         "[membership] heartbeat_interval: must be at least 0.05"),
        ('[critical]\nshare = "s.share"', Overrides(listen=["/ip4/127.0.0.1/tcp/0"]),
         "[critical] policy: missing (the subnet policy block file)"),
        ("[critical]\npolicy = 3", Overrides(listen=["/ip4/127.0.0.1/tcp/0"]),
         "[critical] policy: must be a path (a string), got 3"),
        ('[critical]\npolicy = "p"\nkeys = "k"', Overrides(listen=["/ip4/127.0.0.1/tcp/0"]),
         "[critical]: unknown key 'keys'"),
    ],
)  # fmt: skip
def test_bad_values_are_reported_with_their_place(
    text: str, overrides: Overrides, message: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_config(tomllib.loads(text), source="config.toml", overrides=overrides)
    assert message in str(caught.value)


def test_the_critical_section_names_the_policy_and_share() -> None:
    text = '[node]\nlisten = ["/ip4/127.0.0.1/tcp/0"]\n[critical]\npolicy = "p.cbor"\nshare = "s"'
    critical = parse_config(tomllib.loads(text)).critical
    assert critical is not None and (critical.policy, critical.share) == (Path("p.cbor"), Path("s"))
    assert parse_config(tomllib.loads(text.split("[critical]", maxsplit=1)[0])).critical is None


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[node\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_config(bad)


def test_topics() -> None:
    assert topic("dao-1", "flows") == "/qflow/1/dao-1/flows"
    assert subnet_topics("a") == ("/qflow/1/a/flows", "/qflow/1/a/exec", "/qflow/1/a/nodes")
    with pytest.raises(TopicError):
        topic("a/b", "flows")


def test_backoff_grows_to_its_cap_with_bounded_jitter() -> None:
    backoff = Backoff(initial=0.5, maximum=8.0, factor=2.0, jitter=0.2)
    rng = random.Random(7)
    delays = [backoff.delay(n, rng) for n in range(1, 10)]
    for n, delay in enumerate(delays, start=1):
        base = min(8.0, 0.5 * 2 ** (n - 1))
        assert base * 0.8 <= delay <= base * 1.2
    assert max(delays) <= 8.0 * 1.2
