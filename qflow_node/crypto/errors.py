"""The exceptions of the crypto package: each names what is wrong and where."""

from __future__ import annotations


class CryptoError(ValueError):
    """Base class: input the crypto package refuses."""


class DecodeError(CryptoError):
    """Bytes that are not a valid scalar, point, key, signature or message."""


class ThresholdError(CryptoError):
    """A threshold operation asked for something impossible: bad t/n, index, too few parts."""


class InvalidPartialsError(ThresholdError):
    """Too few partial signatures verify to make a signature; `culprits` are the bad ones."""

    def __init__(self, message: str, culprits: tuple[int, ...]) -> None:
        super().__init__(message)
        self.culprits = culprits


class DKGError(CryptoError):
    """A DKG message or call that breaks the protocol (wrong round, unknown party, ...)."""
