"""Vertex AI states -> cloudnn's unified states (pure: names in, enums out).

``JobState`` (aiplatform v1) has twelve values; cloudnn has seven::

    JOB_STATE_QUEUED                      QUEUED        (waiting for quota/capacity)
    JOB_STATE_PENDING                     PROVISIONING  (machines being prepared)
    JOB_STATE_RUNNING, JOB_STATE_UPDATING RUNNING
    JOB_STATE_CANCELLING                  RUNNING       (it is checkpointing; not over)
    JOB_STATE_PAUSED                      QUEUED
    JOB_STATE_SUCCEEDED                   SUCCEEDED
    JOB_STATE_FAILED, JOB_STATE_EXPIRED,  FAILED
    JOB_STATE_PARTIALLY_SUCCEEDED
    JOB_STATE_CANCELLED                   CANCELLED

CANCELLING is deliberately not CANCELLED: a job that is still writing its
checkpoint must not look finished, or a resume would race it.
"""

from __future__ import annotations

from cloudnn.provider import EndpointState, JobState

__all__ = ["endpoint_state", "job_state"]

_JOB: dict[str, JobState] = {
    "JOB_STATE_UNSPECIFIED": JobState.QUEUED,
    "JOB_STATE_QUEUED": JobState.QUEUED,
    "JOB_STATE_PENDING": JobState.PROVISIONING,
    "JOB_STATE_RUNNING": JobState.RUNNING,
    "JOB_STATE_UPDATING": JobState.RUNNING,
    "JOB_STATE_CANCELLING": JobState.RUNNING,
    "JOB_STATE_PAUSED": JobState.QUEUED,
    "JOB_STATE_SUCCEEDED": JobState.SUCCEEDED,
    "JOB_STATE_FAILED": JobState.FAILED,
    "JOB_STATE_EXPIRED": JobState.FAILED,
    "JOB_STATE_PARTIALLY_SUCCEEDED": JobState.FAILED,
    "JOB_STATE_CANCELLED": JobState.CANCELLED,
}


def job_state(vendor: str) -> JobState:
    """The unified state of a ``JobState`` name (unknown names: RUNNING)."""
    return _JOB.get(vendor, JobState.RUNNING)


def endpoint_state(
    *, exists: bool, deployed: bool, operation_done: bool | None, failed: bool
) -> EndpointState:
    """An endpoint's unified state from what Vertex AI reports about it.

    ``deployed``: our DeployedModel is on the endpoint; ``operation_done``:
    whether the DeployModel operation has finished (None: no operation
    known); ``failed``: it finished with an error.
    """
    if not exists:
        return EndpointState.CREATING
    if deployed:
        return EndpointState.IN_SERVICE
    if failed:
        return EndpointState.FAILED
    if operation_done is False:
        return EndpointState.CREATING
    return EndpointState.FAILED
