"""cloudnn on Google Vertex AI: custom jobs, Cloud Logging, endpoints, and an emulator.

``VertexAIProvider`` implements the cloudnn provider SPI (registered as
``gcp`` through the ``cloudnn.providers`` entry point); ``cloudnn_gcp.testing``
is the local Vertex AI emulator (``cloudnn emulator --provider gcp``).
Importing this package loads no Google SDK: the clients are built on first use.
"""

from __future__ import annotations

from cloudnn_gcp.provider import VertexAIProvider

__all__ = ["VertexAIProvider", "__version__"]

__version__ = "0.1.0"
