"""Threshold BLS signatures and distributed key generation."""
