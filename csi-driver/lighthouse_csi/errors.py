"""Domain errors of the driver. Each carries the gRPC status code it maps to,
so the mapping lives in one place (rpc.py) instead of in every method."""

import grpc


class CsiError(Exception):
    """Base: a failure the caller should see with a specific status code."""

    code = grpc.StatusCode.INTERNAL


class InvalidArgument(CsiError):
    code = grpc.StatusCode.INVALID_ARGUMENT


class NotFound(CsiError):
    code = grpc.StatusCode.NOT_FOUND


class AlreadyExists(CsiError):
    code = grpc.StatusCode.ALREADY_EXISTS


class FailedPrecondition(CsiError):
    code = grpc.StatusCode.FAILED_PRECONDITION


class Busy(CsiError):
    """Another operation on the same volume is in flight; the CO retries."""

    code = grpc.StatusCode.ABORTED


class MountFailed(CsiError):
    """The lighthouse daemon or a kernel mount failed: INTERNAL, retryable."""

    code = grpc.StatusCode.INTERNAL
