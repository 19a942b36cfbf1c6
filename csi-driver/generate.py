"""Generate the CSI gRPC stubs from lighthouse_csi/csi.proto.

Usage: python csi-driver/generate.py [OUTPUT_DIR]

The stubs are committed (no maintained PyPI package ships them). The test
tests/t5_deploy/csi/test_csi_stubs.py runs this into a temporary directory and compares, so
an edit of the .proto without regenerating, or a different grpcio-tools
version than the one pinned, is caught.
"""

import pathlib
import sys

from grpc_tools import protoc
import grpc_tools

HERE = pathlib.Path(__file__).resolve().parent
PROTO = "lighthouse_csi/csi.proto"


def generate(out_dir: pathlib.Path) -> None:
    """Write lighthouse_csi/csi_pb2.py and csi_pb2_grpc.py under out_dir."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "lighthouse_csi").mkdir(exist_ok=True)
    # grpc_tools ships the well-known protos (descriptor, wrappers).
    well_known = pathlib.Path(grpc_tools.__file__).parent / "_proto"
    # -I at csi-driver/ so the generated import reads
    # `from lighthouse_csi import csi_pb2`, which works inside the package.
    rc = protoc.main([
        "grpc_tools.protoc",
        f"-I{HERE}",
        f"-I{well_known}",
        f"--python_out={out_dir}",
        f"--grpc_python_out={out_dir}",
        str(HERE / PROTO),
    ])
    if rc != 0:
        raise SystemExit(f"protoc failed with exit code {rc}")


if __name__ == "__main__":
    generate(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else HERE)
