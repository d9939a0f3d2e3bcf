"""cloudnn on Amazon SageMaker: training jobs, endpoints and a local emulator.

Installed as the ``cloudnn-aws`` distribution (``pip install "cloudnn[aws]"``)
and found by cloudnn through the ``cloudnn.providers`` entry point ``aws``.
Importing this package loads no AWS SDK: boto3 is imported on the first call
that needs it, and ``cloudnn plan --provider aws`` never does.

* :class:`SageMakerProvider` -- the provider (:mod:`cloudnn_aws.provider`)
* :mod:`cloudnn_aws.compile` -- spec -> SageMaker request payloads (pure)
* :mod:`cloudnn_aws.testing` -- the local SageMaker emulator
  (``pip install "cloudnn-aws[testing]"``, ``cloudnn emulator --provider aws``)
"""

from __future__ import annotations

from cloudnn_aws.provider import SageMakerProvider

__all__ = ["SageMakerProvider", "__version__"]

__version__ = "0.1.0"
