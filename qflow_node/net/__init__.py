"""libp2p host, gossipsub topics, request/response protocols, membership."""
