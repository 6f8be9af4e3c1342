"""Deterministic simulation of a Qflow cluster (docs/testing.md): the node's real
services on a simulated network and virtual clocks, driven by one seed."""
