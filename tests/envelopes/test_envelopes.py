"""open_envelope: every kind round-trips; every hostile variant is a Rejected with its code."""

from __future__ import annotations

from typing import Any

import cbrrr
import msgspec
import pytest

from qflow_node.codec import dag_block, encode_dag, raw_block
from qflow_node.codec import envelope as codec_envelope
from qflow_node.codec.envelope import (
    KIND_MAX_SIZE,
    KINDS,
    body_obj,
    decode_envelope,
    encode_body,
    signing_message,
)
from qflow_node.codec.envelope_bodies import Body, Control, Heartbeat, Rejection
from qflow_node.core import envelopes as core_envelopes
from qflow_node.core.envelopes import (
    REASONS,
    Rejected,
    Verified,
    open_envelope,
    seal_envelope,
    sign_control,
)
from qflow_node.identity.keys import SigningKey

KEY = SigningKey(b"\x01" * 32)
OTHER = SigningKey(b"\x02" * 32)
ACTOR = SigningKey(b"\x03" * 32)
SUBNET = "dao-1"
SEQ = 1_700_000_000_000_000


def open_(data: Any, **kwargs: Any) -> Verified[Body] | Rejected:
    return open_envelope(data, subnet=kwargs.pop("subnet", SUBNET), **kwargs)


def reason(data: Any, **kwargs: Any) -> str:
    result = open_(data, **kwargs)
    assert isinstance(result, Rejected), result
    assert result.reason in REASONS
    return result.reason


def outer(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "v": 1,
        "kind": "claim",
        "from": KEY.peer_id,
        "seq": SEQ,
        "body": b"\xa0",
        "sig": bytes(64),
    }
    base.update(fields)
    return msgspec.msgpack.encode({k: v for k, v in base.items() if v is not DROP})


DROP = object()


def body_with(bodies: dict[str, Body], kind: str, **changes: Any) -> bytes:
    """The canonical dag-cbor of a valid body with some fields replaced (possibly broken)."""
    obj = body_obj(bodies[kind])
    obj.update(changes)
    return bytes(cbrrr.encode_dag_cbor(obj))


# --- round trips -----------------------------------------------------------------------


def test_every_kind_round_trips(bodies: dict[str, Body], sealed: dict[str, bytes]) -> None:
    assert set(sealed) == KINDS
    for i, (kind, body) in enumerate(bodies.items()):
        result = open_(sealed[kind])
        assert result == Verified(kind=kind, sender=KEY.peer_id, seq=SEQ + i, body=body)
        assert type(result.body) is type(body)


def test_wire_layout(sealed: dict[str, bytes], bodies: dict[str, Body]) -> None:
    raw = msgspec.msgpack.decode(sealed["claim"])
    assert list(raw) == ["v", "kind", "from", "seq", "body", "sig"]
    assert raw["v"] == 1 and raw["kind"] == "claim" and raw["from"] == KEY.peer_id
    # The body is the canonical dag-cbor of the body map (what any IPLD library writes).
    assert raw["body"] == encode_dag(body_obj(bodies["claim"]))
    assert raw["body"] == encode_body(bodies["claim"])
    message = signing_message(SUBNET, "claim", raw["seq"], raw["body"])
    assert raw["sig"] == KEY.sign(message)


def test_signing_message_is_exact() -> None:
    assert signing_message("dao-1", "claim", 258, b"\xa0") == (
        b"qflow/envelope/v1\x00dao-1\x00claim\x00\x00\x00\x00\x00\x00\x00\x01\x02\xa0"
    )


def test_topics(sealed: dict[str, bytes]) -> None:
    assert isinstance(open_(sealed["heartbeat"], channel="nodes"), Verified)
    assert isinstance(open_(sealed["submission"], channel="flows"), Verified)
    assert isinstance(open_(sealed["rejection"], channel="flows"), Verified)
    assert reason(sealed["rejection"], channel="exec") == "wrong_topic"
    for kind in ("claim", "record", "heads", "control"):
        assert isinstance(open_(sealed[kind], channel="exec"), Verified)
    assert reason(sealed["heartbeat"], channel="exec") == "wrong_topic"
    assert reason(sealed["claim"], channel="flows") == "wrong_topic"


# --- size ----------------------------------------------------------------------------


class _MustNotParse:
    def decode(self, data: bytes) -> Any:
        raise AssertionError("parsed an input that the size cap should have refused")


def test_oversize_is_refused_by_length_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(codec_envelope, "_OUTER", _MustNotParse())
    monkeypatch.setattr(codec_envelope, "_PROBE", _MustNotParse())
    huge = bytes(100 * 1024 * 1024)
    assert open_(huge) == Rejected("oversize", "104857600 bytes exceeds the 1048576-byte cap")
    assert reason(b"\x80" * 101, max_size=100) == "oversize"


def test_per_kind_cap_before_signature(
    forge: Any, monkeypatch: pytest.MonkeyPatch, bodies: dict[str, Body]
) -> None:
    big = forge(b"\x00" * 5000, kind="heartbeat")
    assert 4096 < len(big) < 1 << 20

    def no_verify(*args: Any) -> None:
        raise AssertionError("verified a signature on an oversize envelope")

    monkeypatch.setattr(core_envelopes, "verify", no_verify)
    result = open_(big)
    assert result == Rejected("oversize", f"heartbeat of {len(big)} bytes exceeds 4096")
    assert KIND_MAX_SIZE["heartbeat"] == 4096


# --- outer structure ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (b"", "malformed"),
        (b"\xc1", "malformed"),
        (msgspec.msgpack.encode([1, "claim"]), "malformed"),
        (outer(extra=1), "malformed"),
        (outer(seq="1"), "malformed"),
        (outer(seq=-1), "malformed"),
        (outer(seq=2**63), "malformed"),
        (outer(seq=True), "malformed"),
        (outer(body="text"), "malformed"),
        (outer(sig=bytes(63)), "malformed"),
        (outer(kind="x" * 33), "malformed"),
        (outer(v=DROP), "malformed"),
        (outer(sig=DROP), "malformed"),
        (outer(**{"from": 7}), "malformed"),
        (b"\x87\xa1v\x01" + outer()[1:], "malformed"),  # a duplicate key
        (b"\xde\x00\x06" + outer()[1:], "malformed"),  # map16 header for 6 keys
        (outer(v=2), "unsupported_version"),
        (outer(v=2, extra=1, sig=DROP), "unsupported_version"),
        (outer(v=0), "unsupported_version"),
        (outer(kind="gossip"), "unknown_kind"),
        (outer(kind=""), "unknown_kind"),
        (outer(**{"from": "not-a-peer-id"}), "bad_sender"),
        (outer(**{"from": ACTOR.did}), "bad_sender"),
        (outer(), "bad_signature"),
    ],
)
def test_outer_rejections(data: bytes, code: str) -> None:
    assert reason(data) == code


@pytest.mark.parametrize("value", [bytearray(b"\x80"), memoryview(b"\x80"), "text", None, 5])
def test_not_bytes_is_malformed(value: Any) -> None:
    assert reason(value) == "malformed"


def test_a_bad_subnet_argument_is_a_caller_bug(sealed: dict[str, bytes]) -> None:
    with pytest.raises(ValueError, match="subnet"):
        open_envelope(sealed["claim"], subnet="a\x00b")
    with pytest.raises(ValueError, match="subnet"):
        open_envelope(sealed["claim"], subnet="dao-1\n")
    with pytest.raises(ValueError, match="channel"):
        open_envelope(sealed["claim"], subnet="dao-1", channel="blocks")


# --- signatures -----------------------------------------------------------------------


def test_forged_signatures(sealed: dict[str, bytes], forge: Any) -> None:
    data = sealed["claim"]
    raw = msgspec.msgpack.decode(data)
    flipped = bytes([raw["sig"][0] ^ 1]) + raw["sig"][1:]
    assert reason(outer(**{**raw, "sig": flipped})) == "bad_signature"
    # Signed by OTHER, claiming to be KEY.
    assert reason(forge(raw["body"], key=OTHER, sender=KEY.peer_id)) == "bad_signature"
    # Valid, but for another subnet, kind or seq: none of them can be replayed.
    assert reason(data, subnet="dao-2") == "bad_signature"
    assert reason(outer(**{**raw, "kind": "heads"})) == "bad_signature"
    assert reason(outer(**{**raw, "seq": raw["seq"] + 1})) == "bad_signature"
    assert reason(outer(**{**raw, "body": raw["body"] + b"\x00"})) == "bad_signature"


def test_signature_is_checked_before_the_body(forge: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    unsigned = outer(body=b"\xff garbage")
    assert reason(unsigned) == "bad_signature"
    assert reason(forge(b"\xff garbage")) == "malformed"

    def no_body(*args: Any) -> Any:
        raise AssertionError("looked at the body of an unverified envelope")

    monkeypatch.setattr(core_envelopes, "decode_body", no_body)
    assert reason(unsigned) == "bad_signature"


def test_wrong_sender(forge: Any, bodies: dict[str, Body]) -> None:
    body = body_with(bodies, "heartbeat", node=OTHER.peer_id)
    assert open_(forge(body, kind="heartbeat")) == Rejected(
        "wrong_sender", "a heartbeat's node must be the envelope's sender"
    )
    with pytest.raises(ValueError, match="wrong_sender"):
        seal_envelope(OTHER, subnet=SUBNET, seq=1, body=bodies["heartbeat"])


def test_control_needs_the_actor_signature(forge: Any, bodies: dict[str, Body]) -> None:
    control = bodies["control"]
    assert isinstance(control, Control)
    # The relaying node's signature is fine; the actor's is not.
    wrong_actor = body_with(bodies, "control", sig=OTHER.sign(b"anything" * 8))
    assert reason(forge(wrong_actor, kind="control")) == "bad_signature"
    # An actor signature does not carry over to another action.
    moved = body_with(bodies, "control", action="deny")
    assert reason(forge(moved, kind="control")) == "bad_signature"
    # Relayed by OTHER: still valid (the actor signed the command, any node may carry it).
    relayed = seal_envelope(OTHER, subnet=SUBNET, seq=1, body=control)
    assert open_(relayed) == Verified("control", OTHER.peer_id, 1, control)
    with pytest.raises(ValueError, match="actor"):
        sign_control(OTHER, control)


# --- bodies ---------------------------------------------------------------------------

LINK = dag_block({"other": 1}).cid
RAW_LINK = raw_block(b"raw").cid
CLAIM = {"exec": LINK, "step": "fetch", "attempt": 0, "lease_ms": 3000, "rank": 0}
ANNOUNCED = {"record": LINK, "blocks": []}


@pytest.mark.parametrize(
    ("kind", "changes"),
    [
        ("claim", {"extra": 1}),
        ("claim", {"attempt": True}),
        ("claim", {"attempt": "2"}),
        ("claim", {"attempt": 2.0}),
        ("claim", {"attempt": -1}),
        ("claim", {"attempt": 2**32}),
        ("claim", {"lease_ms": 0}),
        ("claim", {"lease_ms": 600_001}),
        ("claim", {"rank": 1024}),
        ("claim", {"step": ""}),
        ("claim", {"step": "s" * 257}),
        ("claim", {"step": None}),
        ("claim", {"exec": RAW_LINK}),
        ("claim", {"exec": LINK.cid_bytes}),
        ("claim", {"exec": LINK.encode()}),
        ("heartbeat", {"subnets": []}),
        ("heartbeat", {"subnets": [f"s{i:02}" for i in range(17)]}),
        ("heartbeat", {"subnets": ["b", "a"]}),
        ("heartbeat", {"subnets": ["a", "a"]}),
        ("heartbeat", {"subnets": ["a/b"]}),
        ("heartbeat", {"subnets": ["dao\n"]}),
        ("heartbeat", {"subnets": ["Dao"]}),
        ("heartbeat", {"subnets": ["-dao"]}),
        ("heartbeat", {"subnets": ["s" * 65]}),
        ("heartbeat", {"manifest": {"load": 1}}),
        ("heartbeat", {"node": "n" * 65}),
        ("heartbeat", {"addrs": ["/ip4/127.0.0.1/tcp/1"] * 9}),
        ("heartbeat", {"addrs": ["/ip4/127.0.0.1/tcp/1/p2p/12D3KooWx"]}),
        ("heartbeat", {"addrs": ["not a multiaddr"]}),
        ("heartbeat", {"addrs": ["/ip4/" + "1" * 300]}),
        ("heartbeat", {"addrs": ["/ip4/127.0.0.1/tcp/1\n"]}),
        ("heads", {"entries": [{"exec": LINK, "heads": []}]}),
        ("heads", {"entries": [{"exec": LINK, "heads": [LINK] * 1025}]}),
        ("heads", {"entries": [{"exec": LINK, "heads": [RAW_LINK]}]}),
        ("heads", {"entries": [{"exec": LINK, "heads": [LINK, LINK]}]}),
        ("heads", {"entries": [{"exec": RAW_LINK, "heads": [LINK]}]}),
        ("heads", {"entries": [{"exec": LINK, "heads": [LINK], "extra": 1}]}),
        ("heads", {"entries": [{"exec": LINK}]}),
        ("heads", {"entries": []}),
        ("heads", {"entries": [{"exec": LINK, "heads": [LINK]}] * 2}),
        ("heads", {"entries": None}),
        ("claims", {"claims": []}),
        ("claims", {"claims": [CLAIM]}),  # one claim travels as a `claim`
        ("claims", {"claims": [CLAIM, CLAIM]}),  # a slot twice
        ("claims", {"claims": [CLAIM, {**CLAIM, "rank": 1024}]}),
        ("claims", {"claims": [{**CLAIM, "step": f"s{i}"} for i in range(65)]}),
        ("claims", {"claims": [CLAIM, {**CLAIM, "attempt": 1}], "extra": 1}),
        ("records", {"records": [ANNOUNCED]}),
        ("records", {"records": [ANNOUNCED, ANNOUNCED]}),  # a record twice
        ("records", {"records": [ANNOUNCED, {"record": RAW_LINK, "blocks": []}]}),
        ("records", {"records": [ANNOUNCED, {"record": LINK}]}),
        ("record", {"record": RAW_LINK}),
        ("record", {"blocks": [{"cid": LINK, "data": b"not the block"}]}),
        ("record", {"blocks": [{"cid": RAW_LINK, "data": b"raw"}] * 2}),
        ("submission", {"blocks": [{"cid": RAW_LINK, "data": b"raw"}] * 9}),
        ("control", {"action": "explode"}),
        ("control", {"step": None}),
        ("control", {"action": "pause"}),
        ("control", {"actor": KEY.peer_id}),
        ("control", {"actor": "did:key:z6MkNotAKey"}),
        ("control", {"nonce": b"short"}),
        ("control", {"sig": bytes(63)}),
        ("rejection", {"extra": 1}),
        ("rejection", {"exec": RAW_LINK}),
        ("rejection", {"exec": LINK.encode()}),
        ("rejection", {"reason": ""}),
        ("rejection", {"reason": "Bad_Inputs"}),
        ("rejection", {"reason": "r" * 33}),
        ("rejection", {"reason": 7}),
        ("rejection", {"message": ""}),
        ("rejection", {"message": "m" * 513}),
        ("rejection", {"message": "colour \x1b[31mred"}),
        ("rejection", {"message": "line\nbreak"}),
        ("rejection", {"message": "c1 \x9b31m"}),
        ("rejection", {"message": b"bytes"}),
        ("rejection", {"message": None}),
    ],
)
def test_bad_fields(
    forge: Any, bodies: dict[str, Body], kind: str, changes: dict[str, Any]
) -> None:
    assert reason(forge(body_with(bodies, kind, **changes), kind=kind)) == "bad_field"


def test_the_longest_rejection_fits_its_cap(bodies: dict[str, Body]) -> None:
    sample = bodies["rejection"]
    assert isinstance(sample, Rejection)
    exec = sample.exec
    longest = Rejection(exec=exec, reason="r" * 32, message="\U0001f600" * 512)  # 2 KiB
    data = seal_envelope(KEY, subnet=SUBNET, seq=1, body=longest)
    assert len(data) <= KIND_MAX_SIZE["rejection"] == 4096
    assert open_(data, channel="flows") == Verified("rejection", KEY.peer_id, 1, longest)
    for message in ("m" * 513, "tab\there", "\x7f"):
        with pytest.raises(ValueError, match="message"):
            seal_envelope(KEY, subnet=SUBNET, seq=1, body=Rejection(exec, "bad_inputs", message))


def test_manifest_bounds(forge: Any, bodies: dict[str, Body]) -> None:
    manifest = body_obj(bodies["heartbeat"])["manifest"]
    for field, value in [
        ("load", 1001),
        ("load", -1),
        ("free_work_tokens", 2**32),
        ("memory_bytes", 2**63),
        ("wasm_engine", ""),
        ("version", "v" * 65),
    ]:
        broken = body_with(bodies, "heartbeat", manifest={**manifest, field: value})
        assert reason(forge(broken, kind="heartbeat")) == "bad_field", field


def test_body_encoding(forge: Any) -> None:
    unsorted = b"\xa2\x62bb\x01\x61a\x02"  # {"bb": 1, "a": 2}: keys out of dag-cbor order
    assert reason(forge(unsorted)) == "malformed"
    assert reason(forge(encode_dag({"a": 1}) + b"\x00")) == "malformed"
    assert reason(forge(encode_dag([1, 2]))) == "bad_field"
    assert reason(forge(b"")) == "malformed"
    assert reason(forge(b"\xa2\x61a\x01\x61a\x02")) == "malformed"  # a duplicate key


def test_rejection_messages_name_the_field(forge: Any, bodies: dict[str, Body]) -> None:
    result = open_(forge(body_with(bodies, "claim", rank=1024)))
    assert result == Rejected("bad_field", "claim body: Expected `int` <= 1023 - at `$.rank`")


def test_seal_refuses_what_peers_refuse(bodies: dict[str, Body]) -> None:
    heartbeat = bodies["heartbeat"]
    assert isinstance(heartbeat, Heartbeat)
    too_loaded = Heartbeat(
        node=heartbeat.node,
        subnets=heartbeat.subnets,
        manifest=msgspec.structs.replace(heartbeat.manifest, load=1001),
    )
    with pytest.raises(ValueError, match="load"):
        seal_envelope(KEY, subnet=SUBNET, seq=1, body=too_loaded)
    with pytest.raises(ValueError, match="seq"):
        seal_envelope(KEY, subnet=SUBNET, seq=-1, body=heartbeat)
    with pytest.raises(ValueError, match="subnet"):
        seal_envelope(KEY, subnet="", seq=1, body=heartbeat)


def test_decode_envelope_leaves_the_body_alone(sealed: dict[str, bytes]) -> None:
    env = decode_envelope(sealed["record"])
    assert env.kind == "record" and env.sender == KEY.peer_id and len(env.sig) == 64


@pytest.mark.parametrize(
    "data",
    [
        b"\x81\xa4\xff\xff\xff\xff\x01",  # a key that is not UTF-8
        b"\x82\xa1x" + b"\x91" * 500_000 + b"\x01\xa1v\x02",  # nested past msgspec's limit
        b"\x81\xa1v" + b"\x91" * 500_000 + b"\x01",
    ],
)
def test_decoder_errors_are_malformed(data: bytes) -> None:
    assert reason(data) == "malformed"


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_deeply_nested_bodies(forge: Any, kind: str) -> None:
    deep = b"\x81" * min(KIND_MAX_SIZE[kind] - 300, 200_000) + b"\x01"
    for body in (
        b"\xa1\x65extra" + deep,  # an unknown field
        b"\xa1\x66blocks" + deep,  # a known one
        b"\xa1\x64exec" + deep,
        b"\xa1\x68manifest" + deep,
        deep,
    ):
        assert reason(forge(body, kind=kind)) in {"malformed", "bad_field"}
