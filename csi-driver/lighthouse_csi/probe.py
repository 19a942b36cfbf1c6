"""`python -m lighthouse_csi.probe unix:///csi/csi.sock`: exit 0 when the
driver answers Identity.Probe with ready (the container's health check)."""

import sys

import grpc

from lighthouse_csi import csi_pb2, csi_pb2_grpc


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    endpoint = argv[0] if argv else "unix:///csi/csi.sock"
    try:
        with grpc.insecure_channel(endpoint) as channel:
            response = csi_pb2_grpc.IdentityStub(channel).Probe(csi_pb2.ProbeRequest(), timeout=5)
    except grpc.RpcError as err:
        print(f"probe of {endpoint} failed: {err.code().name}: {err.details()}", file=sys.stderr)
        return 1
    if response.HasField("ready") and not response.ready.value:
        print(f"{endpoint}: driver not ready", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
