"""SageMaker states -> cloudnn's unified :class:`JobState` / :class:`EndpointState`.

Training jobs (``TrainingJobStatus`` / ``SecondaryStatus``)::

    InProgress / Starting, Pending                      QUEUED
    InProgress / LaunchingMLInstances, PreparingTrainingStack,
                 Downloading, DownloadingTrainingImage  PROVISIONING
                 (RECOVERING once the job was interrupted: a spot restart)
    InProgress / Training, Uploading, Updating          RUNNING
    InProgress / Interrupted, Restarting                RECOVERING
    Stopping                                            RUNNING (it is still
                                                        saving; ends CANCELLED)
    Completed                                           SUCCEEDED
    Failed                                              FAILED (FailureReason)
    Stopped / MaxRuntimeExceeded, MaxWaitTimeExceeded   FAILED (SageMaker stopped it)
    Stopped                                             CANCELLED

Endpoints (``EndpointStatus``): Creating -> CREATING; Updating, SystemUpdating,
RollingBack -> UPDATING; InService -> IN_SERVICE; Deleting -> DELETING;
OutOfService -> STOPPED; Failed, UpdateRollbackFailed -> FAILED.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cloudnn.provider import EndpointState, JobState

__all__ = ["to_endpoint_state", "to_job_state"]

_QUEUED = frozenset({"Starting", "Pending"})
_PROVISIONING = frozenset(
    {
        "LaunchingMLInstances",
        "PreparingTrainingStack",
        "Downloading",
        "DownloadingTrainingImage",
    }
)
_RECOVERING = frozenset({"Interrupted", "Restarting"})
_LIMITS = {
    "MaxRuntimeExceeded": "SageMaker stopped the job at its time limit "
    "(StoppingCondition.MaxRuntimeInSeconds, from resources.max_runtime)",
    "MaxWaitTimeExceeded": "SageMaker stopped the spot job: its wait for spot "
    "capacity plus training exceeded MaxWaitTimeInSeconds",
}


def to_job_state(describe: Mapping[str, Any]) -> tuple[JobState, str]:
    """(unified state, human message) of a DescribeTrainingJob response."""
    status = str(describe.get("TrainingJobStatus", ""))
    secondary = str(describe.get("SecondaryStatus", ""))
    reason = str(describe.get("FailureReason", "") or "")
    transitions = describe.get("SecondaryStatusTransitions") or []
    history = {str(t.get("Status", "")) for t in transitions}
    if status == "Completed":
        return JobState.SUCCEEDED, ""
    if status == "Failed":
        return JobState.FAILED, reason or _LIMITS.get(secondary, "the job failed")
    if status == "Stopped":
        if secondary in _LIMITS:
            return JobState.FAILED, _LIMITS[secondary]
        return JobState.CANCELLED, "stopped"
    if status == "Stopping":
        return JobState.RUNNING, "stopping: saving a checkpoint and the model"
    if status == "Deleting":
        return JobState.CANCELLED, "being deleted"
    if secondary in _RECOVERING:
        return JobState.RECOVERING, _message(describe, secondary)
    if secondary in _PROVISIONING:
        if history & _RECOVERING:
            return JobState.RECOVERING, _message(describe, secondary)
        return JobState.PROVISIONING, _message(describe, secondary)
    if secondary in _QUEUED:
        if history & _RECOVERING:
            return JobState.RECOVERING, _message(describe, secondary)
        return JobState.QUEUED, _message(describe, secondary)
    return JobState.RUNNING, _message(describe, secondary)


def _message(describe: Mapping[str, Any], secondary: str) -> str:
    transitions = describe.get("SecondaryStatusTransitions") or []
    if transitions:
        last = transitions[-1]
        if str(last.get("Status", "")) == secondary and last.get("StatusMessage"):
            return str(last["StatusMessage"])
    return secondary


_ENDPOINT = {
    "Creating": EndpointState.CREATING,
    "Updating": EndpointState.UPDATING,
    "SystemUpdating": EndpointState.UPDATING,
    "RollingBack": EndpointState.UPDATING,
    "InService": EndpointState.IN_SERVICE,
    "Deleting": EndpointState.DELETING,
    "OutOfService": EndpointState.STOPPED,
    "Failed": EndpointState.FAILED,
    "UpdateRollbackFailed": EndpointState.FAILED,
}


def to_endpoint_state(describe: Mapping[str, Any]) -> tuple[EndpointState, str]:
    """(unified state, message) of a DescribeEndpoint response."""
    status = str(describe.get("EndpointStatus", ""))
    state = _ENDPOINT.get(status, EndpointState.UPDATING)
    return state, str(describe.get("FailureReason", "") or "")
