"""A PNG of p50 (bars) and p99 (ticks) per operation and target, one panel per pass."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def plot(doc, path):
    """Write the PNG; False if there is nothing to plot."""
    passes = [p for p in doc["results"] if doc["results"][p]]
    if not passes:
        return False
    fig, axes = plt.subplots(len(passes), 1, figsize=(13, 4.5 * len(passes)), squeeze=False)
    for ax, pass_ in zip(axes[:, 0], passes):
        targets = doc["results"][pass_]
        names = list(targets)
        ops = [op for op in doc["ops"] if any(op in targets[n] for n in names)]
        width = 0.8 / len(names)
        for k, name in enumerate(names):
            xs = [i + (k - (len(names) - 1) / 2) * width for i in range(len(ops))]
            s = [targets[name].get(op, {}) for op in ops]
            p50 = [x.get("p50_us") or 0 for x in s]
            p99 = [x.get("p99_us") or 0 for x in s]
            bars = ax.bar(xs, p50, width, label=f"{name} p50")
            ax.scatter(xs, p99, marker="_", s=120, color=bars.patches[0].get_facecolor(), zorder=3)
        ax.set_yscale("log")
        ax.set_xticks(range(len(ops)), ops, rotation=30, ha="right")
        ax.set_ylabel("µs (bar p50, tick p99)")
        ax.set_title(f"latency per operation, {pass_}")
        ax.grid(axis="y", which="both", alpha=0.3)
        ax.legend(fontsize="small", ncols=min(3, len(names)))
    fig.suptitle(f"lighthousefs vs tmpfs vs bindfs, {doc['started']}")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return True
