"""Local control API."""
