"""Node and actor keys, libp2p peer ids and did:key identities."""

from qflow_node.identity.keys import (
    IdentityError,
    InvalidSignatureError,
    SigningKey,
    did_from_public_key,
    peer_id_from_public_key,
    public_key_from_did,
    public_key_from_identity,
    public_key_from_peer_id,
    verify,
)

__all__ = [
    "IdentityError",
    "InvalidSignatureError",
    "SigningKey",
    "did_from_public_key",
    "peer_id_from_public_key",
    "public_key_from_did",
    "public_key_from_identity",
    "public_key_from_peer_id",
    "verify",
]
