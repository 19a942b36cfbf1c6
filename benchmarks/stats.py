"""Summaries of latency samples (nanoseconds in, microseconds out)."""


def percentile(sorted_ns, q):
    """Nearest-rank percentile of an ascending list; q in [0, 100]."""
    if not sorted_ns:
        return None
    rank = max(1, -(-len(sorted_ns) * q // 100))  # ceil(n*q/100), at least 1
    return sorted_ns[min(len(sorted_ns), int(rank)) - 1]


def summarize(samples_ns):
    """p50/p90/p99/max in µs and ops/s (count over the summed op time)."""
    s = sorted(samples_ns)
    total = sum(s)
    us = lambda ns: round(ns / 1000, 2)  # noqa: E731
    return {
        "n": len(s),
        "p50_us": us(percentile(s, 50)),
        "p90_us": us(percentile(s, 90)),
        "p99_us": us(percentile(s, 99)),
        "max_us": us(s[-1]),
        "ops_per_s": round(len(s) / (total / 1e9), 1) if total else None,
    }
