"""Command line and gRPC server: `lighthouse-csi --endpoint unix:///csi/csi.sock ...`.

One process serves Identity plus the Node service (DaemonSet), the
Controller service (Deployment), or both (--mode all, for tests and single
machines). SIGTERM stops serving but leaves published volumes mounted: pods
still use them, and the next driver picks them up from the state file.
"""

import argparse
import concurrent.futures
import dataclasses
import logging
import os
import signal
import socket
import threading

import grpc

from lighthouse_csi import DRIVER_NAME, csi_pb2_grpc
from lighthouse_csi.controller import Controller
from lighthouse_csi.identity import Identity
from lighthouse_csi.lighthouse import FUSE_DEVICE, Lighthouse
from lighthouse_csi.node import Node
from lighthouse_csi.rpc import VolumeLocks, redact_url

log = logging.getLogger("lighthouse_csi")


@dataclasses.dataclass
class Config:
    lighthouse: Lighthouse
    state_dir: str
    driver_name: str = DRIVER_NAME
    node_id: str = ""
    allowed_root: str = "/var/lib/kubelet"
    controller_agent: str = "csi-controller"
    node: bool = True
    controller: bool = True


def socket_path(endpoint: str) -> str:
    if not endpoint.startswith("unix://"):
        raise SystemExit(f"--endpoint must be unix:///path, not {endpoint!r}")
    return "/" + endpoint[len("unix://"):].lstrip("/")


def build(config: Config, endpoint: str):
    """Create and start the server. Returns (server, controller or None, node or None)."""
    path = socket_path(endpoint)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    os.makedirs(config.state_dir, exist_ok=True)
    if os.path.exists(path):  # a socket left by a previous, killed driver
        probe = socket.socket(socket.AF_UNIX)
        try:
            probe.connect(path)
        except OSError:
            os.unlink(path)
        else:
            raise SystemExit(f"another driver is serving on {path}")
        finally:
            probe.close()
    locks = VolumeLocks()
    server = grpc.server(concurrent.futures.ThreadPoolExecutor(max_workers=8))
    csi_pb2_grpc.add_IdentityServicer_to_server(Identity(config, locks), server)
    controller = node = None
    if config.controller:
        controller = Controller(config, locks)
        csi_pb2_grpc.add_ControllerServicer_to_server(controller, server)
    if config.node:
        node = Node(config, locks)
        csi_pb2_grpc.add_NodeServicer_to_server(node, server)
    server.add_insecure_port(f"unix://{path}")
    server.start()
    if node is not None:
        node.start_recovery()
    return server, controller, node


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="lighthouse-csi", description=__doc__.split("\n")[0])
    p.add_argument("--endpoint", default=os.environ.get("CSI_ENDPOINT", "unix:///csi/csi.sock"))
    p.add_argument("--mode", choices=("node", "controller", "all"), default="all")
    p.add_argument("--node-id", default=os.environ.get("NODE_ID", socket.gethostname()))
    p.add_argument("--state-dir", default="/var/lib/lighthousefs-csi",
                   help="node state file and staging mounts (a hostPath on nodes)")
    p.add_argument("--store", default=os.environ.get("LIGHTHOUSE_STORE", ""),
                   help="store URL for every mount: sqlite:///abs/path.db or redis://host:port/db "
                        "(default $LIGHTHOUSE_STORE, where a URL with a password belongs: "
                        "every user of the node can read a process's arguments)")
    p.add_argument("--allowed-root", default="/var/lib/kubelet",
                   help="target paths must lie under this directory")
    p.add_argument("--lighthouse-cmd", default="lighthouse",
                   help="how to run the lighthouse CLI, e.g. 'python3 -m lighthousefs.cli'")
    p.add_argument("--fuse-device", default=FUSE_DEVICE,
                   help="the FUSE device every mount needs (another path only in tests)")
    p.add_argument("--controller-agent", default="csi-controller",
                   help="agent identity of the controller's own namespace mount")
    p.add_argument("--driver-name", default=DRIVER_NAME)
    p.add_argument("--log-level", default="INFO")
    args = p.parse_args(argv)
    if not args.store:
        p.error("--store (or LIGHTHOUSE_STORE) is required")
    return args


def main(argv=None) -> None:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    config = Config(
        lighthouse=Lighthouse(args.lighthouse_cmd, args.store, args.fuse_device),
        state_dir=args.state_dir, driver_name=args.driver_name, node_id=args.node_id,
        allowed_root=args.allowed_root, controller_agent=args.controller_agent,
        node=args.mode in ("node", "all"), controller=args.mode in ("controller", "all"))
    server, controller, _ = build(config, args.endpoint)
    log.info("%s serving %s on %s (node %s, store %s)", config.driver_name, args.mode,
             args.endpoint, config.node_id, redact_url(args.store))
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    stop.wait()
    log.info("stopping")
    server.stop(grace=10).wait()
    if controller is not None:
        controller.close()  # the controller's namespace mount is private to it


if __name__ == "__main__":
    main()
