"""Bitswap 1.0-1.2 messages: protobuf on the wire, typed and checked on our side.

The protobuf schema is the one every implementation shares (py-libp2p ships its
generated module; we reuse it rather than keep a second copy). This module turns a
message's bytes into `Incoming` - wants, blocks and presences - and builds replies.

CIDs: IPFS has two spellings of one dag-pb identifier, CIDv0 (`Qm…`, the bare
multihash) and CIDv1 dag-pb. Kubo keys wants by spelling, so we key ours by the
normalised v1 form (`normalize`) and keep the bytes the peer used to answer in kind.
Only sha2-256 multihashes are understood; anything else is a want we cannot serve.

A block's CID is computed here from its prefix and its bytes, never taken from the
sender: a received block is named by what it hashes to, so a lying peer can only send
blocks nobody asked for, which the exchange drops.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Final

from google.protobuf.message import DecodeError
from libp2p.bitswap.pb.bitswap_pb2 import Message

from qflow_node.codec import CID
from qflow_node.codec.dagpb import DAG_PB, DagPbError, cid_with_codec, is_v0, link_cid
from qflow_node.codec.protobuf import ProtoError, read_varint

PROTOCOL_V120: Final = "/ipfs/bitswap/1.2.0"
# Newest first: what we offer when we open a stream, and every id we answer on.
PROTOCOLS: Final = (PROTOCOL_V120, "/ipfs/bitswap/1.1.0", "/ipfs/bitswap/1.0.0", "/ipfs/bitswap")
# go-bitswap's limit for one message (`network.MessageSizeMax`); larger ones are refused.
MAX_MESSAGE_SIZE: Final = 4 << 20

_SHA2_256: Final = 0x12
_DIGEST_LEN: Final = 32
_V0_PREFIX: Final = bytes([0x00, DAG_PB, _SHA2_256, _DIGEST_LEN])


class WireError(ValueError):
    """A message that is not a bitswap message we can act on."""


@dataclass(frozen=True, slots=True)
class Want:
    cid: CID  # normalised (CIDv1)
    asked_as: bytes  # the CID bytes as the peer wrote them; replies use these
    block: bool  # True: want the block; False: want to know whether we have it
    send_dont_have: bool
    cancel: bool


@dataclass(slots=True)
class Incoming:
    wants: list[Want] = field(default_factory=list)
    full_wantlist: bool = False
    blocks: list[tuple[CID, bytes]] = field(default_factory=list)  # (normalised CID, data)
    haves: list[CID] = field(default_factory=list)
    dont_haves: list[CID] = field(default_factory=list)
    unsupported: int = 0  # entries naming CIDs or blocks we cannot interpret


def normalize(raw: bytes) -> CID:
    """The CIDv1 form of CID bytes as a peer wrote them; WireError unless sha2-256."""
    try:
        return link_cid(raw)
    except DagPbError as exc:
        raise WireError(str(exc)) from None


def block_cid(prefix: bytes, data: bytes) -> CID:
    """The normalised CID a block with this prefix and these bytes has (bitswap 1.1+)."""
    try:
        version, pos = read_varint(prefix, 0)
        codec, pos = read_varint(prefix, pos)
        hash_code, pos = read_varint(prefix, pos)
        length, pos = read_varint(prefix, pos)
    except ProtoError as exc:
        raise WireError(f"bad block prefix: {exc}") from None
    if pos != len(prefix) or hash_code != _SHA2_256 or length != _DIGEST_LEN:
        raise WireError("only blocks with a sha2-256 CID prefix are accepted")
    if version not in (0, 1) or (version == 0 and codec != DAG_PB):
        raise WireError(f"CID version {version} with codec 0x{codec:02x} in a block prefix")
    return cid_with_codec(codec, hashlib.sha256(data).digest())


def prefix_for(asked_as: bytes) -> bytes:
    """The block prefix that names a block the way the peer asked for it."""
    if is_v0(asked_as):
        return _V0_PREFIX
    return asked_as[:-_DIGEST_LEN]


def parse(data: bytes) -> Incoming:
    """Decode one message; WireError if it is not protobuf of the bitswap schema."""
    msg = Message()
    try:
        msg.ParseFromString(data)
    except DecodeError as exc:
        raise WireError(f"not a bitswap message: {exc}") from None
    incoming = Incoming(full_wantlist=msg.wantlist.full)
    for entry in msg.wantlist.entries:
        try:
            cid = normalize(entry.block)
        except WireError:
            incoming.unsupported += 1
            continue
        incoming.wants.append(
            Want(
                cid,
                bytes(entry.block),
                block=entry.wantType == Message.Wantlist.Block,
                send_dont_have=entry.sendDontHave,
                cancel=entry.cancel,
            )
        )
    for block in msg.payload:
        try:
            incoming.blocks.append((block_cid(block.prefix, block.data), block.data))
        except WireError:
            incoming.unsupported += 1
    for data_v0 in msg.blocks:  # bitswap 1.0: bare blocks are CIDv0 (dag-pb, sha2-256)
        incoming.blocks.append((block_cid(_V0_PREFIX, data_v0), data_v0))
    for presence in msg.blockPresences:
        try:
            cid = normalize(presence.cid)
        except WireError:
            incoming.unsupported += 1
            continue
        if presence.type == Message.Have:
            incoming.haves.append(cid)
        else:
            incoming.dont_haves.append(cid)
    return incoming


@dataclass(slots=True)
class Outgoing:
    """One message being assembled for a peer."""

    wants: list[tuple[bytes, bool, bool]] = field(default_factory=list)  # (cid, block, cancel)
    blocks: list[tuple[bytes, bytes]] = field(default_factory=list)  # (prefix, data)
    presences: list[tuple[bytes, bool]] = field(default_factory=list)  # (cid, have)

    @property
    def size(self) -> int:
        """Roughly the encoded size: block bytes dominate."""
        return sum(len(d) + 48 for _, d in self.blocks) + 48 * (
            len(self.wants) + len(self.presences)
        )

    def __bool__(self) -> bool:
        return bool(self.wants or self.blocks or self.presences)

    def encode(self) -> bytes:
        msg = Message()
        for cid, block, cancel in self.wants:
            msg.wantlist.entries.add(
                block=cid,
                priority=1,
                cancel=cancel,
                wantType=Message.Wantlist.Block if block else Message.Wantlist.Have,
                sendDontHave=not cancel,
            )
        for prefix, data in self.blocks:
            msg.payload.add(prefix=prefix, data=data)
        for cid, have in self.presences:
            msg.blockPresences.add(cid=cid, type=Message.Have if have else Message.DontHave)
        return msg.SerializeToString()
