"""The `lighthouse` command: mount, umount, status, emit, log."""
from __future__ import annotations

import argparse
import json
import logging
import os
import select
import subprocess
import sys
import time

from . import errors
from .store import default_url
from .store import url as store_url

log = logging.getLogger("lighthousefs")

READY_TIMEOUT_S = 60.0


def _log_path(mountpoint: str) -> str:
    import platformdirs
    name = os.path.abspath(mountpoint).strip("/").replace("/", "_") or "root"
    directory = platformdirs.user_log_dir("lighthousefs")
    os.makedirs(directory, exist_ok=True)
    return os.path.join(directory, f"{name}.log")


def _setup_logging(verbose: bool, path: str | None = None) -> None:
    # A path in a message may hold a name that is not UTF-8 (bytes as surrogates).
    handler = (logging.FileHandler(path, encoding="utf-8", errors="backslashreplace") if path
               else logging.StreamHandler())
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.addHandler(handler)
    root.setLevel(logging.DEBUG if verbose else logging.INFO)


def cmd_mount(args) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    try:
        os.makedirs(mountpoint)
    except FileExistsError:
        pass   # a directory, or a mount left dead by a killed daemon (stat fails): serve() sorts them out
    except OSError as exc:
        print(f"lighthouse: cannot create the mount point {mountpoint}: {exc.strerror}", file=sys.stderr)
        return 2
    if not args.foreground:
        return _mount_in_background(args, mountpoint)
    _setup_logging(args.verbose, args.log)
    import trio

    from .daemon import MountConfig, serve

    config = MountConfig(mountpoint, args.store, args.agent, args.read_only, args.demo,
                         debug_fuse=args.debug_fuse, metrics_address=args.metrics, cache_mb=args.cache_mb)

    def on_ready():
        if args.ready_fd is not None:
            os.write(args.ready_fd, b"ready\n")
            os.close(args.ready_fd)

    try:
        trio.run(serve, config, on_ready)
    except errors.StoreOpenError as exc:
        log.error("cannot mount: %s", exc)
        print(f"lighthouse: cannot mount {mountpoint}: {exc}", file=sys.stderr)
        return 2
    return 0


def _mount_in_background(args, mountpoint: str) -> int:
    """Start the daemon detached and return once it answers (or say why it did not)."""
    log_file = args.log or _log_path(mountpoint)
    read_fd, write_fd = os.pipe()
    # The store URL (it may hold a password) goes by the environment, never argv.
    command = [sys.executable, "-m", "lighthousefs.cli", "mount", mountpoint, "--foreground",
               "--ready-fd", str(write_fd), "--log", log_file]
    for flag, value in (("--agent", args.agent), ("--metrics", args.metrics), ("--cache-mb", str(args.cache_mb))):
        if value:
            command += [flag, value]
    for flag, on in (("--read-only", args.read_only), ("--demo", args.demo), ("--verbose", args.verbose),
                     ("--debug-fuse", args.debug_fuse)):
        if on:
            command.append(flag)
    stderr_path = log_file + ".stderr"
    with open(stderr_path, "ab") as stderr:
        start = stderr.tell()   # what earlier attempts wrote stays, but is not this one's message
        child = subprocess.Popen(command, pass_fds=(write_fd,), start_new_session=True,
                                 env=store_url.child_environment(args.store),
                                 stdin=subprocess.DEVNULL, stdout=stderr, stderr=stderr)
    os.close(write_fd)
    with os.fdopen(read_fd, "rb") as ready:
        # A daemon that hangs before it is ready (a silent store) must not hang us too.
        in_time = select.select([ready], [], [], READY_TIMEOUT_S)[0]
        answer = ready.readline() if in_time else b""   # EOF if the daemon exited first
    if answer == b"ready\n":
        print(f"lighthouse: mounted {mountpoint} (pid {child.pid}, log {log_file})")
        return 0
    try:
        code = child.wait(timeout=READY_TIMEOUT_S if in_time else 0)
    except subprocess.TimeoutExpired:
        child.kill()
        child.wait()
        code = -9
    with open(stderr_path, "rb") as stderr:
        stderr.seek(start)
        tail = stderr.read()[-4000:].decode(errors="replace").strip()
    why = f"exit {code}" if in_time else f"not ready within {READY_TIMEOUT_S:g} s, stopped"
    if in_time and tail.startswith("lighthouse: ") and "\n" not in tail:
        print(tail, file=sys.stderr)   # the daemon said in one line what is wrong
    else:
        print(f"lighthouse: mount of {mountpoint} failed ({why})" + (f":\n{tail}" if tail else ""),
              file=sys.stderr)
    return code if code and code > 0 else 1


def _health(mountpoint: str) -> dict:
    with open(os.path.join(mountpoint, ".lighthouse", "health"), "rb") as f:
        return json.loads(f.read())


def cmd_umount(args) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    try:
        pid = _health(mountpoint)["pid"]
    except (OSError, ValueError, KeyError):
        pid = None
    result = subprocess.run(["fusermount3", "-u", mountpoint], capture_output=True, text=True)
    if result.returncode != 0:
        print(f"lighthouse: umount {mountpoint}: {result.stderr.strip()}", file=sys.stderr)
        return 1
    # The daemon stores a snapshot after the unmount; wait for it, so a remount is quick.
    deadline = time.monotonic() + 30
    while pid and process_running(pid) and time.monotonic() < deadline:
        time.sleep(0.02)
    return 0


def process_running(pid: int) -> bool:
    """False once the process has exited (a zombie nobody reaped counts as exited)."""
    import psutil
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


# `lighthouse status`: 0 ok, 1 the mount does not answer, 3 degraded, 4 failing (2 is a
# usage error, as for every command).
STATUS_CODES = {"ok": 0, "degraded": 3, "failing": 4}


def cmd_status(args) -> int:
    mountpoint = os.path.abspath(args.mountpoint)
    try:
        health = _health(mountpoint)
        with open(os.path.join(mountpoint, ".lighthouse", "stats"), "rb") as f:
            stats = f.read().decode()
    except OSError as exc:
        print(f"lighthouse: {mountpoint} is not answering: {exc.strerror}", file=sys.stderr)
        return 1
    print(json.dumps(health, indent=2))
    print(stats, end="")
    # Scripts and the container's health check go by the exit code (see STATUS_CODES).
    return STATUS_CODES.get(health.get("status"), STATUS_CODES["failing"])


def cmd_emit(args) -> int:
    from .api import Client
    try:
        data = json.loads(args.data) if args.data else None
    except ValueError as exc:
        print(f"lighthouse: --data is not valid JSON: {exc}", file=sys.stderr)
        return 2
    try:
        with Client(args.store, actor=args.actor) as client:
            event = client.append(args.type, args.path, data)
    except (errors.LighthouseError, errors.StoreOpenError) as exc:
        print(f"lighthouse: emit: {exc}", file=sys.stderr)
        return 2
    print(event.to_json_line().decode(), end="")
    return 0


def cmd_log(args) -> int:
    from .api import Client
    from .domain.rules import check_agent_name
    try:
        if args.agent is not None:
            if args.agent == "operator":
                raise errors.InvalidArgument("--agent operator: the operator is no agent; leave --agent out")
            check_agent_name(args.agent)
        # An agent sees only what it may (visibility.py); without --agent, everything.
        # Reading never makes a store (create=False).
        with Client(args.store, actor=args.agent or "operator", create=False) as client:
            events = client.follow(args.after) if args.follow else client.read_all(args.after)
            for event in events:
                sys.stdout.write(event.to_json_line().decode())
                if args.follow:
                    sys.stdout.flush()
    except KeyboardInterrupt:
        pass   # Ctrl-C ends --follow
    except (errors.LighthouseError, errors.StoreOpenError) as exc:
        print(f"lighthouse: log: {exc}", file=sys.stderr)
        return 2
    return 0


def parser() -> argparse.ArgumentParser:
    top = argparse.ArgumentParser(prog="lighthouse", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

    def with_store(p):
        p.add_argument("--store", help="sqlite:///path.db (default, embedded) or redis://host:port/db; "
                       "a URL with a password belongs in --store-file or $LIGHTHOUSE_STORE, not here "
                       "(every user can read a process's arguments)")
        p.add_argument("--store-file", metavar="PATH", help="read the store URL from this file; without "
                       "--store or this: $CREDENTIALS_DIRECTORY/store (systemd), $LIGHTHOUSE_STORE, the default")
        return p

    mount = with_store(sub.add_parser("mount", help="mount the namespace"))
    mount.add_argument("mountpoint")
    mount.add_argument("--agent", help="act as this agent (its events carry this actor)")
    mount.add_argument("--foreground", action="store_true", help="serve until SIGINT/SIGTERM")
    mount.add_argument("--read-only", action="store_true")
    mount.add_argument("--demo", action="store_true", help="add a demo project to an empty namespace")
    mount.add_argument("--metrics", metavar="ADDR:PORT", help="serve Prometheus metrics here")
    mount.add_argument("--cache-mb", type=int, default=64, help="in-process chunk cache (L1) size")
    mount.add_argument("--log", help="log file (background mounts log to the user's log directory)")
    mount.add_argument("--verbose", action="store_true")
    mount.add_argument("--debug-fuse", action="store_true", help=argparse.SUPPRESS)
    mount.add_argument("--ready-fd", type=int, help=argparse.SUPPRESS)
    mount.set_defaults(run=cmd_mount)

    umount = sub.add_parser("umount", help="unmount and wait for the daemon to finish")
    umount.add_argument("mountpoint")
    umount.set_defaults(run=cmd_umount)

    status = sub.add_parser("status", help="health and statistics of a mount",
                            description="Print the mount's health report and statistics. Exit status: 0 ok, "
                                        "1 the mount does not answer, 2 usage error, 3 degraded, 4 failing.")
    status.add_argument("mountpoint")
    status.set_defaults(run=cmd_status)

    emit = with_store(sub.add_parser("emit", help="append an annotation event to the log"))
    emit.add_argument("type")
    emit.add_argument("--path", default="")
    emit.add_argument("--data", help="JSON payload")
    emit.add_argument("--actor", default=os.environ.get("LIGHTHOUSE_AGENT", "cli"))
    emit.set_defaults(run=cmd_emit)

    log_cmd = with_store(sub.add_parser("log", help="print the event log as JSON lines"))
    log_cmd.add_argument("--after", type=int, default=0, help="start after this sequence number")
    log_cmd.add_argument("-f", "--follow", action="store_true", help="keep printing new events as they are stored")
    log_cmd.add_argument("--agent", help="show only what this agent may see (not other agents' private memories)")
    log_cmd.set_defaults(run=cmd_log)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if hasattr(args, "store_file"):
        try:
            args.store = store_url.resolve(args.store, args.store_file, default_url())
        except store_url.StoreUrlError as exc:
            print(f"lighthouse: {exc}", file=sys.stderr)
            return 2
    try:
        return args.run(args)
    except BrokenPipeError:       # `lighthouse log | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(main())
