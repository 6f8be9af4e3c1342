"""Qflow node: a peer-to-peer automation engine with no central server."""

__version__ = "0.1.0"
