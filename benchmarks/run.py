"""``python -m benchmarks``: measure lighthousefs against tmpfs and bindfs on real mounts.

Every (target, pass) gets a fresh mount, fresh fixtures and a fresh store, and is torn
down before the next one starts. Results: benchmarks/results/<timestamp>.json and .png,
plus latest.json and latest.png.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import time
import traceback
from pathlib import Path

from . import extras, restart
from .mounts import MODES, REPO, Skip, install_handlers, mounted, run_cleanups
from .ops import COMMON, OPS, iterations, run_ops

BASELINES = ("tmpfs", "bindfs")
PARTS = ("ops", "throughput", "propagation", "memory", "restart")
MEMORY_TARGETS = ("bindfs", "lighthousefs-sqlite", "lighthousefs-redis-warm")
RESTART_TARGETS = ("lighthousefs-sqlite", "lighthousefs-redis-warm")
CHECK_P99_MS = 5.0


def parse_args(argv):
    p = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true",
                   help="short run for CI (about 2 minutes): fewer iterations, pinned pass only")
    pin = p.add_mutually_exclusive_group()
    pin.add_argument("--pin", dest="passes", action="store_const", const=["pinned"],
                     help="only the pass with benchmark and daemons pinned to one CPU")
    pin.add_argument("--no-pin", dest="passes", action="store_const", const=["unpinned"],
                     help="only the unpinned pass (default: both passes; only pinned with --quick)")
    p.add_argument("--cpu", type=int, default=max(os.sched_getaffinity(0)), help="CPU to pin to")
    p.add_argument("--modes", default=",".join(MODES),
                   help=f"lighthousefs modes, comma-separated, or 'none' (default: {','.join(MODES)})")
    p.add_argument("--ops", default=",".join(OPS), help="operations, comma-separated (default: all)")
    p.add_argument("--parts", default=",".join(PARTS), help=f"what to run (default: {','.join(PARTS)})")
    p.add_argument("--iterations", type=int, help="iterations per operation (overrides --quick's)")
    p.add_argument("--mem-files", help="file counts for memory and start-up, comma-separated "
                   "(default: 1000,10000, and 100000 without --quick)")
    p.add_argument("--restart-files", type=int,
                   help="files for the restart part (default: 1000000, and 100000 with --quick)")
    p.add_argument("--check", action="store_true",
                   help=f"exit 1 if a common operation's p99 exceeds {CHECK_P99_MS} ms, or anything failed")
    p.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results", help="results directory")
    args = p.parse_args(argv)
    args.passes = args.passes or (["pinned"] if args.quick else ["pinned", "unpinned"])
    args.modes = [] if args.modes in ("", "none") else args.modes.split(",")
    args.ops = [o for o in args.ops.split(",") if o]
    args.parts = args.parts.split(",")
    args.mem_files = ([int(n) for n in args.mem_files.split(",")] if args.mem_files
                      else [1000, 10000] if args.quick else [1000, 10000, 100000])
    args.restart_files = args.restart_files or (100_000 if args.quick else 1_000_000)
    for bad, known, what in ((args.modes, MODES, "mode"), (args.ops, OPS, "operation"),
                             (args.parts, PARTS, "part")):
        if set(bad) - set(known):
            p.error(f"unknown {what}: {', '.join(sorted(set(bad) - set(known)))}")
    return args


def host_info():
    def version(cmd):
        try:
            return subprocess.run(cmd, capture_output=True, text=True, timeout=10).stdout.strip().splitlines()[0]
        except (OSError, IndexError, subprocess.SubprocessError):
            return None
    return {"hostname": platform.node(), "kernel": platform.release(), "cpus": os.cpu_count(),
            "python": platform.python_version(), "bindfs": version(["bindfs", "--version"]),
            "git": version(["git", "--version"]),
            "commit": version(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"])}


def _attempt(fn, *args):
    """fn's result, or {"skipped": why} / {"error": what} without stopping the run."""
    try:
        return fn(*args)
    except Skip as e:
        return {"skipped": str(e)}
    except Exception as e:  # noqa: BLE001
        traceback.print_exc()
        return {"error": f"{type(e).__name__}: {e}"[:500]}


def run_target(name, cpu, args, with_extras):
    """Mount one target, measure it, tear it down. Raises Skip if it cannot mount."""
    with mounted(name, cpu) as t:
        out = {}
        if "ops" in args.parts:
            out["ops"] = run_ops(t, args.ops, args.quick, args.iterations)
        if with_extras and "throughput" in args.parts:
            out["throughput"] = _attempt(extras.closes_per_s, t, args.quick)
            if name.startswith("lighthousefs"):
                out["api_events"] = _attempt(extras.api_events, t, args.quick)
        if with_extras and "propagation" in args.parts and name != "tmpfs":
            out["propagation"] = _attempt(extras.propagation, t, args.quick)
        return out


def run_memory(name, args):
    with mounted(name) as t:
        return extras.memory_startup(t, args.mem_files)


def run_restart(name, args):
    with mounted(name) as t:
        return restart.restart_at_scale(t, args.restart_files)


def run_large_file(name, args):
    with mounted(name) as t:
        return extras.large_file_rss(t, args.quick)


def ratios(results):
    """p50/p99 of each lighthousefs target over tmpfs and bindfs, per pass and op."""
    out = {}
    for pass_, targets in results.items():
        for name, ops in targets.items():
            if not name.startswith("lighthousefs"):
                continue
            for op, s in ops.items():
                r = {}
                for base in BASELINES:
                    b = targets.get(base, {}).get(op, {})
                    for q in ("p50", "p99"):
                        if s.get(f"{q}_us") and b.get(f"{q}_us"):
                            r[f"{q}_vs_{base}"] = round(s[f"{q}_us"] / b[f"{q}_us"], 2)
                out.setdefault(pass_, {}).setdefault(name, {})[op] = r
    return out


def check(doc):
    violations, errors = [], list(doc["errors"])
    for pass_, targets in doc["results"].items():
        for name, ops in targets.items():
            for op, s in ops.items():
                if "error" in s:
                    errors.append(f"{pass_} {name} {op}: {s['error']}")
                elif op in COMMON and s["p99_us"] > CHECK_P99_MS * 1000:
                    violations.append(f"{pass_} {name} {op}: p99 {s['p99_us'] / 1000:.2f} ms")
    for name, parts in doc["extras"].items():
        for part, r in parts.items():
            if isinstance(r, dict) and "error" in r:
                errors.append(f"{name} {part}: {r['error']}")
    return {"threshold_ms": CHECK_P99_MS, "common_ops": list(COMMON), "violations": violations,
            "errors": errors, "ok": not violations and not errors}


def write_results(doc, out):
    out.mkdir(parents=True, exist_ok=True)
    stamp = doc["started"].replace(":", "").replace("-", "")[:15]
    path = out / f"{stamp}.json"
    path.write_text(json.dumps(doc, indent=1) + "\n")
    shutil.copyfile(path, out / "latest.json")
    try:
        from .plot import plot
        if plot(doc, out / f"{stamp}.png"):
            shutil.copyfile(out / f"{stamp}.png", out / "latest.png")
        else:
            (out / "latest.png").unlink(missing_ok=True)
    except ImportError as e:
        print(f"no plot: {e} (pip install matplotlib)", file=sys.stderr)
    return path


def main(argv=None):
    args = parse_args(argv)
    install_handlers()
    all_cpus = os.sched_getaffinity(0)
    t_start = time.monotonic()

    def progress(what):
        print(f"[{time.monotonic() - t_start:6.1f} s] {what} ...", file=sys.stderr, flush=True)

    targets = list(BASELINES) + [f"lighthousefs-{m}" for m in args.modes]
    doc = {"schema": 1, "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
           "quick": args.quick, "argv": sys.argv[1:] if argv is None else list(argv), "host": host_info(),
           "config": {"passes": args.passes, "pin_cpu": args.cpu, "modes": args.modes, "ops": args.ops,
                      "parts": args.parts, "mem_files": args.mem_files, "restart_files": args.restart_files,
                      "check_p99_ms": CHECK_P99_MS,
                      "iterations": {k: iterations(k, args.quick, args.iterations) for k in ("op", "cmd")}},
           "ops": {name: {"kind": kind, "what": what} for name, (kind, what) in OPS.items()},
           "results": {p: {} for p in args.passes}, "extras": {}, "skipped": {}, "errors": []}
    try:
        for name in targets:
            for pass_ in args.passes:
                cpu = args.cpu if pass_ == "pinned" else None
                os.sched_setaffinity(0, {cpu} if cpu is not None else all_cpus)
                progress(f"{name} ({pass_})")
                try:
                    res = run_target(name, cpu, args, with_extras=pass_ == args.passes[-1])
                except Skip as e:
                    doc["skipped"][name] = str(e)
                    print(f"skipped: {name}: {e}", file=sys.stderr, flush=True)
                    break
                except Exception as e:  # noqa: BLE001 - report it, measure the rest
                    traceback.print_exc()
                    doc["errors"].append(f"{pass_} {name}: {type(e).__name__}: {e}"[:500])
                    continue
                if "ops" in res:
                    doc["results"][pass_][name] = res.pop("ops")
                if res:
                    doc["extras"].setdefault(name, {}).update(res, extras_pass=pass_)
            os.sched_setaffinity(0, all_cpus)
            if "memory" in args.parts and name in MEMORY_TARGETS and name not in doc["skipped"]:
                progress(f"{name} (memory)")
                doc["extras"].setdefault(name, {})["memory"] = _attempt(run_memory, name, args)
                progress(f"{name} (large file)")
                doc["extras"][name]["large_file"] = _attempt(run_large_file, name, args)
            if "restart" in args.parts and name in RESTART_TARGETS and name not in doc["skipped"]:
                progress(f"{name} (restart, {args.restart_files} files)")
                doc["extras"].setdefault(name, {})["restart"] = _attempt(run_restart, name, args)
    finally:
        run_cleanups()
        os.sched_setaffinity(0, all_cpus)
    doc["finished"] = datetime.datetime.now().astimezone().isoformat(timespec="seconds")
    doc["duration_s"] = round(time.monotonic() - t_start, 1)
    doc["ratios"] = ratios(doc["results"])
    doc["check"] = check(doc)
    path = write_results(doc, args.out)
    from .report import markdown
    print(markdown(doc))
    print(f"results: {path}", file=sys.stderr)
    for line in doc["check"]["violations"] + doc["check"]["errors"]:
        print(f"check: {line}", file=sys.stderr)
    return 1 if args.check and not doc["check"]["ok"] else 0
