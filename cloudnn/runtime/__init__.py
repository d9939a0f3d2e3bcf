"""What runs inside every job: a local subprocess or a vendor container.

``cloudnn.runtime.context()`` reads whichever environment it finds
(SageMaker, Vertex AI, Azure ML, torchrun, or cloudnn's local backend) into one
:class:`RuntimeContext`: model, checkpoint and output directories, data
channels, hyperparameters, rank and world size. It needs only the standard
library; torch is imported by the trainer, models and serving modules only.
"""

from __future__ import annotations

from cloudnn.runtime.context import RuntimeContext, context

__all__ = ["RuntimeContext", "context"]
