"""The local PyTorch backend (the default provider, and the reference for the clouds)."""

from cloudnn.local.provider import LocalProvider

__all__ = ["LocalProvider"]
