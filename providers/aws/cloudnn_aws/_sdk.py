"""The only module that imports boto3/botocore: clients and error mapping.

boto3 is imported on the first call, never at import time, so planning and
``import cloudnn_aws`` stay fast. Every SDK call goes through :meth:`Aws.call`,
which runs it under botocore's *standard* retry mode (throttling and 5xx,
``max_attempts`` per call) and :func:`cloudnn.retry.call` on top (a whole
operation, Retry-After honoured), with vendor errors mapped by
:func:`map_error` onto :mod:`cloudnn.errors`::

    ThrottlingException, TooManyRequests, SlowDown, ...   -> ThrottledError (retried)
    HTTP 5xx, InternalFailure, ServiceUnavailable         -> TransientError (retried)
    AccessDenied, ExpiredToken, no credentials, ...       -> AuthenticationError
    ResourceLimitExceeded ("account-level service limit") -> QuotaExceededError
    ResourceLimitExceeded (no capacity), CapacityError    -> CapacityError
    ValidationException "... at 'resourceConfig.x' ..."   -> SpecError naming the field
    ValidationException "Could not find ...", NoSuchKey   -> NotFoundError
    ResourceInUse, "Cannot create already existing ..."   -> AlreadyExistsError
    ModelError (the endpoint's model server said 4xx/5xx) -> EndpointError
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from cloudnn.errors import (
    AuthenticationError,
    CapacityError,
    CloudnnError,
    EndpointError,
    NotFoundError,
    QuotaExceededError,
    SpecError,
    ThrottledError,
    TransientError,
)
from cloudnn.retry import RetryPolicy, parse_retry_after
from cloudnn.retry import call as retry_call

if TYPE_CHECKING:
    from cloudnn_aws.config import ProviderConfig

__all__ = [
    "CHECK_POLICY",
    "CREDENTIAL_CHAIN",
    "AlreadyExistsError",
    "Aws",
    "map_error",
]

T = TypeVar("T")

#: where boto3 looks for credentials, in order: named in every auth error
CREDENTIAL_CHAIN = (
    "boto3 looks for credentials in AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY "
    "(+ AWS_SESSION_TOKEN), then the profile AWS_PROFILE in ~/.aws/credentials "
    "and ~/.aws/config (SSO: `aws sso login`), then a container or instance "
    "role; refresh expired ones and run `cloudnn check --provider aws`"
)

_THROTTLING = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "ThrottledException",
        "RequestThrottledException",
        "TooManyRequestsException",
        "ProvisionedThroughputExceededException",
        "TransactionInProgressException",
        "RequestLimitExceeded",
        "BandwidthLimitExceeded",
        "LimitExceededException",
        "RequestThrottled",
        "SlowDown",
        "PriorRequestNotComplete",
        "EC2ThrottledException",
    }
)
_TRANSIENT = frozenset(
    {
        "InternalFailure",
        "InternalError",
        "InternalServerError",
        "InternalServerException",
        "ServiceUnavailable",
        "ServiceUnavailableException",
        "RequestTimeout",
        "RequestTimeoutException",
    }
)
_AUTH = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnrecognizedClientException",
        "InvalidClientTokenId",
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "IncompleteSignature",
        "MissingAuthenticationToken",
        "ExpiredToken",
        "ExpiredTokenException",
        "AuthFailure",
        "NotAuthorized",
        "UnauthorizedOperation",
        "InvalidToken",
    }
)
_NOT_FOUND = frozenset(
    {
        "NoSuchKey",
        "NotFound",
        "404",
        "ResourceNotFound",
        "ResourceNotFoundException",
        "ObjectNotFound",
    }
)
#: "Value 'x' at 'resourceConfig.instanceType' failed to satisfy constraint"
_AT_FIELD = re.compile(r"at '([A-Za-z0-9_.\[\]]+)'")


#: `cloudnn check` asks once and reports: no minute-long retries
CHECK_POLICY = RetryPolicy(attempts=2, initial=0.2, maximum=1.0, deadline=10.0)


class AlreadyExistsError(CloudnnError):
    """A create call found the resource there already (callers adopt it)."""


def _pascal_path(path: str) -> str:
    return ".".join(part[:1].upper() + part[1:] for part in path.split("."))


def _client_error(exc: Any) -> CloudnnError | None:
    response = getattr(exc, "response", {}) or {}
    error = response.get("Error", {}) or {}
    code = str(error.get("Code", ""))
    message = str(error.get("Message", "") or exc)
    meta = response.get("ResponseMetadata", {}) or {}
    status = int(meta.get("HTTPStatusCode") or 0)
    headers = meta.get("HTTPHeaders", {}) or {}
    operation = getattr(exc, "operation_name", "") or "AWS call"
    where = f"{operation}: {code}: {message}" if code else f"{operation}: {message}"

    if code == "ModelError":
        original = response.get("OriginalStatusCode") or error.get("OriginalStatusCode")
        detail = (
            response.get("OriginalMessage") or error.get("OriginalMessage") or message
        )
        return EndpointError(
            f"the model server answered {original or 'an error'}: {detail}",
            hint="fix the request (see the endpoint's CloudWatch log for the "
            "server side)",
        )
    if code in _THROTTLING:
        return ThrottledError(
            where,
            hint="the API is throttling this account: retry later or lower the "
            "call rate (other tools sharing the account count too)",
            retry_after=parse_retry_after(headers.get("retry-after")),
        )
    if code in _AUTH or (status == 403 and code not in ("ResourceLimitExceeded",)):
        return AuthenticationError(where, hint=CREDENTIAL_CHAIN)
    if code == "ResourceLimitExceeded":
        lowered = message.lower()
        if "service limit" in lowered or "quota" in lowered:
            return QuotaExceededError(
                where,
                hint="request a higher limit in Service Quotas (service "
                "'Amazon SageMaker', the instance type's 'training job usage' or "
                "'endpoint usage'), or use another instance type or region",
            )
        return CapacityError(
            where,
            hint="SageMaker has no capacity for this instance type now: retry "
            "later, or pick another instance type (providers.aws.instance_type, "
            "resources.accelerator) or region, or use resources.spot",
        )
    if code == "CapacityError" or "insufficient capacity" in message.lower():
        return CapacityError(
            where, hint="retry later, or use another instance type or region"
        )
    if code in ("ResourceInUse", "ResourceInUseException") or (
        "already exist" in message.lower()
    ):
        return AlreadyExistsError(where)
    if code in ("NoSuchBucket",):
        return SpecError(
            "providers.aws.bucket",
            f"{where} (the bucket does not exist, or is in another account)",
            hint="create the bucket (`cloudnn setup --provider aws`) or fix "
            "providers.aws.bucket / CLOUDNN_AWS_BUCKET",
        )
    if code in _NOT_FOUND or (
        code in ("ValidationException", "ValidationError")
        and re.search(r"could not find|not found|does not exist", message, re.I)
    ):
        return NotFoundError(
            where, hint="was it deleted, or created in another region?"
        )
    if code in ("ValidationException", "ValidationError", "InvalidParameterValue"):
        found = _AT_FIELD.search(message)
        from cloudnn_aws.compile import field_for

        spec_field = (
            field_for(_pascal_path(found.group(1))) if found else "providers.aws"
        )
        return SpecError(
            spec_field,
            f"{operation} was rejected: {message}",
            hint=f"fix {spec_field}",
        )
    if status >= 500 or code in _TRANSIENT:
        return TransientError(where, hint="a temporary AWS failure; retry later")
    return None


def map_error(exc: BaseException) -> CloudnnError | None:
    """A :mod:`cloudnn.errors` error for a boto3/botocore exception, else None."""
    from botocore import exceptions as bx

    if isinstance(exc, bx.ClientError):
        return _client_error(exc)
    if isinstance(
        exc,
        bx.NoCredentialsError
        | bx.PartialCredentialsError
        | bx.CredentialRetrievalError
        | bx.TokenRetrievalError,
    ):
        return AuthenticationError(
            f"no usable AWS credentials: {exc}", hint=CREDENTIAL_CHAIN
        )
    if isinstance(exc, bx.ProfileNotFound):
        return AuthenticationError(
            f"{exc}",
            hint="fix AWS_PROFILE (or the `profile` option); " + CREDENTIAL_CHAIN,
        )
    if isinstance(exc, bx.NoRegionError):
        return SpecError(
            "providers.aws.region",
            "no AWS region is set",
            hint="set providers.aws.region in the spec, or AWS_DEFAULT_REGION",
        )
    if isinstance(exc, bx.ParamValidationError):
        return SpecError(
            "providers.aws", f"invalid request: {exc}", hint="fix the spec"
        )
    if isinstance(exc, bx.EndpointConnectionError | bx.ConnectTimeoutError):
        # botocore already retried the connection (standard mode)
        return CloudnnError(
            f"cannot reach the AWS API: {exc}",
            hint="check the network (and AWS_ENDPOINT_URL, if you point cloudnn "
            "at an emulator: is `cloudnn emulator --provider aws` running?)",
        )
    if isinstance(exc, bx.ReadTimeoutError | bx.ConnectionClosedError):
        return TransientError(f"the AWS API did not answer: {exc}")
    if isinstance(exc, bx.HTTPClientError):
        # e.g. the instance-metadata credential lookup, off an EC2 machine
        return CloudnnError(
            f"an HTTP request of the AWS SDK failed: {exc}",
            hint="check the network; " + CREDENTIAL_CHAIN,
        )
    return None


def _snake(operation: str) -> str:
    return re.sub(r"(?<!^)(?=[A-Z])", "_", operation).lower()


class Aws:
    """boto3 clients for one provider instance, made on first use and reused."""

    def __init__(self, config: ProviderConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._sessions: dict[str, Any] = {}
        self._clients: dict[tuple[str, str], Any] = {}

    def session(self, region: str) -> Any:
        """A boto3 session for ``region`` (with the configured profile)."""
        with self._lock:
            found = self._sessions.get(region)
            if found is None:
                import boto3.session

                def make() -> Any:
                    return boto3.session.Session(
                        profile_name=self.config.profile, region_name=region
                    )

                found = retry_call(make, mapper=map_error, what="boto3 session")
                self._sessions[region] = found
            return found

    def client(self, service: str, region: str) -> Any:
        """A client of ``service`` in ``region`` (standard retries, timeouts)."""
        key = (service, region)
        found = self._clients.get(key)
        if found is not None:
            return found
        session = self.session(region)
        from botocore.config import Config

        cfg = Config(
            retries={
                "mode": "standard",
                "total_max_attempts": self.config.max_attempts,
            },
            connect_timeout=self.config.connect_timeout,
            read_timeout=self.config.read_timeout,
            user_agent_extra="cloudnn",
        )

        def make() -> Any:
            return session.client(
                service, endpoint_url=self.config.endpoint_url, config=cfg
            )

        client = retry_call(make, mapper=map_error, what=f"{service} client")
        with self._lock:
            self._clients.setdefault(key, client)
            return self._clients[key]

    def call(
        self,
        service: str,
        operation: str,
        *,
        region: str,
        policy: RetryPolicy | None = None,
        **params: Any,
    ) -> dict[str, Any]:
        """``service.operation(**params)`` with retries and mapped errors."""
        method = getattr(self.client(service, region), _snake(operation))
        result: dict[str, Any] = retry_call(
            lambda: method(**params),
            mapper=map_error,
            what=operation,
            policy=policy if policy is not None else RetryPolicy(),
        )
        return result

    def run(
        self, fn: Callable[[], T], *, what: str, policy: RetryPolicy | None = None
    ) -> T:
        """Any SDK callable (transfers, paginators) under the same error mapping."""
        return retry_call(
            fn,
            mapper=map_error,
            what=what,
            policy=policy if policy is not None else RetryPolicy(),
        )
