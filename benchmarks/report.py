"""``python -m benchmarks.report [RESULTS.json]``: the Markdown tables of a run
(default: benchmarks/results/latest.json), as the README includes them."""

import argparse
import json
import sys
from pathlib import Path

LATEST = Path(__file__).resolve().parent / "results" / "latest.json"


def num(x):
    if x is None:
        return "–"
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in rows]
    return "\n".join(lines)


def cell(s):
    if not s:
        return "–"
    return f"error: {s['error'][:60]}" if "error" in s else f"{num(s['p50_us'])} / {num(s['p99_us'])}"


def latency(doc, pass_):
    targets = doc["results"][pass_]
    names = list(targets)
    ops = [op for op in doc["ops"] if any(op in targets[n] for n in names)]
    where = f"pinned to CPU {doc['config']['pin_cpu']}" if pass_ == "pinned" else "unpinned"
    rows = [[f"`{op}`"] + [cell(targets[n].get(op)) for n in names] for op in ops]
    out = [f"Latency per operation in µs, p50 / p99 ({where}):", "", table(["operation"] + names, rows)]
    lh = [n for n in names if n.startswith("lighthousefs")]
    ratios = doc.get("ratios", {}).get(pass_, {})
    if lh:
        header, cols = ["operation"], []
        for n in lh:
            for base in ("tmpfs", "bindfs"):
                if base in names:
                    header.append(f"{n.removeprefix('lighthousefs-')} ÷ {base}")
                    cols.append((n, base))

        def ratio(n, base, op):
            r = ratios.get(n, {}).get(op, {})
            p50, p99 = r.get(f"p50_vs_{base}"), r.get(f"p99_vs_{base}")
            return f"{num(p50)}× / {num(p99)}×" if p50 else "–"
        rows = [[f"`{op}`"] + [ratio(n, b, op) for n, b in cols] for op in ops]
        out += ["", f"lighthousefs over the baselines, p50 / p99 ({where}):", "", table(header, rows)]
    return "\n".join(out)


def extras(doc):
    ex = doc.get("extras", {})
    out = []
    rows = []
    for name, e in ex.items():
        tp, api, prop = e.get("throughput", {}), e.get("api_events", {}), e.get("propagation", {})
        if not (tp or api or prop):
            continue
        why = lambda r: r.get("skipped") or (r.get("error") or "")[:40]  # noqa: E731
        prop_cell = (f"{num(prop['p50_us'] / 1000)} / {num(prop['p99_us'] / 1000)}"
                     + (f" ({prop['timeouts']} timeouts)" if prop.get("timeouts") else "")
                     if prop.get("n") else why(prop) or "–")
        rows.append([name, num(tp.get("closes_per_s")) if "closes_per_s" in tp else why(tp) or "–",
                     num(api.get("single_per_s")) if "single_per_s" in api else why(api) or "–",
                     num(api.get("batched_per_s")) if "batched_per_s" in api else "–", prop_cell])
    if rows:
        pass_ = next((e["extras_pass"] for e in ex.values() if "extras_pass" in e), "?")
        out += [f"Throughput and propagation ({pass_}; propagation: close() on one mount to the new "
                "content read on another):", "",
                table(["target", "closes/s (mount)", "events/s (API, single)", "events/s (API, batched)",
                       "propagation ms, p50 / p99"], rows), ""]
    rows = []
    for name, e in ex.items():
        mem = e.get("memory")
        if isinstance(mem, dict):
            rows.append([name, "–", "", mem.get("skipped") or mem.get("error", "")[:60], "", "", ""])
        for m in mem if isinstance(mem, list) else []:
            rows.append([name, m["files"], m.get("created_via", "mount"), num(m["mount_ready_ms"]),
                         num(m["first_stat_ms"]), f"{num(m['rss_ready_mib'])} / {num(m['rss_after_walk_mib'])}",
                         num(m["walk_s"])])
    if rows:
        out += ["Memory and start-up (N files written, then unmounted and mounted again):", "",
                table(["target", "files", "written via", "mount to ready, ms", "first stat, ms",
                       "daemon RSS MiB (ready / after walk)", "walk + stat all, s"], rows), ""]
    rows = []
    for name, e in ex.items():
        r = e.get("restart")
        if isinstance(r, dict) and "files" not in r:
            rows.append([name, "–", r.get("skipped") or r.get("error", "")[:60], "", "", ""])
        elif isinstance(r, dict):
            def start(prefix):
                return (f"{num(r[prefix + 'ready_ms'])} / {num(r[prefix + 'cpu_s'])} / "
                        f"{num(r[prefix + 'rss_mib'])}")
            rows.append([name, r["files"], start("empty_"), start("replay_"), num(r["snapshot_stored_s"]),
                         f"{num(r['mount_ready_ms'])} / {num(r['cpu_s'])} / {num(r['rss_ready_mib'])}"])
    if rows:
        out += ["Restart (files appended straight to the store; each start: mount to ready ms / daemon "
                "CPU s to ready / RSS MiB; the replaying start stores a snapshot in the background):", "",
                table(["target", "files", "empty namespace", "start replaying every event",
                       "snapshot stored after, s", "start from the snapshot"], rows), ""]
    rows = []
    for name, e in ex.items():
        big = e.get("large_file")
        if isinstance(big, dict) and "mib" in big:
            rows.append([name, big["mib"], num(big["rss_idle_mib"]), num(big["rss_peak_mib"]),
                         num(big["rss_growth_mib"]), num(big["mib_per_s"])])
        elif isinstance(big, dict):
            rows.append([name, "–", big.get("skipped") or big.get("error", "")[:60], "", "", ""])
    if rows:
        out += ["RSS while writing a large file (one file of distinct chunks, written and closed):", "",
                table(["target", "MiB", "daemon RSS MiB, idle", "peak", "growth", "MiB/s"], rows), ""]
    return "\n".join(out)


def markdown(doc):
    h = doc["host"]
    parts = [f"Run {doc['started']} on {h['cpus']} CPUs, Linux {h['kernel']}, Python {h['python']}"
             f"{', quick' if doc['quick'] else ''} (commit {h.get('commit') or '?'})."]
    for pass_ in doc["results"]:
        if doc["results"][pass_]:
            parts.append(latency(doc, pass_))
    parts.append(extras(doc))
    for name, why in doc.get("skipped", {}).items():
        parts.append(f"skipped: {name}: {why}")
    if doc.get("check", {}).get("violations"):
        parts.append("Over the 5 ms p99 budget: " + "; ".join(doc["check"]["violations"]))
    return "\n\n".join(p for p in parts if p).rstrip() + "\n"


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.report",
                                     description="The Markdown tables of a benchmark run, as the README includes them.")
    parser.add_argument("results", nargs="?", type=Path, default=LATEST,
                        help="the run's JSON (default: benchmarks/results/latest.json)")
    args = parser.parse_args(argv)
    try:
        doc = json.loads(args.results.read_text())
    except (OSError, ValueError) as exc:
        parser.exit(2, f"{parser.prog}: cannot read {args.results}: {getattr(exc, 'strerror', None) or exc}\n")
    print(markdown(doc), end="")
    return 0


if __name__ == "__main__":
    sys.exit(main())
