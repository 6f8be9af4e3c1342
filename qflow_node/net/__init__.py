"""libp2p host, gossipsub topics, request/response protocols, membership.

* `host`: `build_host(key, listen, limits)` - TCP + Noise + yamux, identify, ping.
* `gossip`: `open_gossip(host, settings)` -> `Gossip` (validated topics, drained
  subscriptions, paced publishing).
* `topics`: `/qflow/1/<subnet>/<flows|exec|nodes>`.
* `bootstrap`: `maintain_bootstrap(host, addrs)` - dial with backoff, redial on loss.
* `reqresp`: `Direct(host)` - size- and time-bounded request/response protocols.
* `events`: `ConnectionLog` - `peer.connected` / `peer.disconnected` log lines.
"""
