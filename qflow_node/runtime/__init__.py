"""trio services wiring the pure core to net, store and sandbox (the daemon)."""
