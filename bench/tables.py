#!/usr/bin/python3
"""Prints the Markdown tables of docs/benchmarks.md from make bench's JSON.

Usage: bench/tables.py RESULTS_DIR    (reads pull.json and step.json)
Every ratio divides two figures of the same run.
"""
import json
import os
import sys

PATHS = ["in_process", "one_sided", "rma_get", "rpc_shm", "rpc_tcp", "redis"]


def pull_tables(pull):
    combos = sorted({(p["dist"], p["threads"]) for p in pull})
    for dist, threads in combos:
        print("\n%s rows, %d client thread(s): M rows/s (p50 us per call)\n" % (dist, threads))
        print("| row B | batch | " + " | ".join(PATHS) + " | one-sided / in-process | RPC tcp / Redis |")
        print("|---|---|" + "---|" * len(PATHS) + "---|---|")
        keys = sorted({(p["row_bytes"], p["batch"]) for p in pull if p["dist"] == dist and p["threads"] == threads})
        for rb, b in keys:
            cell = {p["path"]: p for p in pull
                    if p["dist"] == dist and p["threads"] == threads and p["row_bytes"] == rb and p["batch"] == b}
            cols = []
            for path in PATHS:
                c = cell.get(path)
                cols.append("%.2f (%.0f)" % (c["rows_per_s"] / 1e6, c["p50_us"]) if c and c["rows_per_s"] > 0 else "-")

            def ratio(a, b):
                if a in cell and b in cell and cell[b]["rows_per_s"] > 0:
                    return "%.2fx" % (cell[a]["rows_per_s"] / cell[b]["rows_per_s"])
                return "-"
            print("| %d | %d | %s | %s | %s |" % (rb, b, " | ".join(cols), ratio("one_sided", "in_process"),
                                                  ratio("rpc_tcp", "redis")))


def push_table(push):
    print("\n| batch | in-process M rows/s (p50 us) | daemon M rows/s (p50 us) | daemon / in-process |")
    print("|---|---|---|---|")
    for p in push:
        a, d = p["in_process"], p["daemon"]
        print("| %d | %.2f (%.0f) | %.2f (%.0f) | %.2fx |" % (p["batch"], a["rows_per_s"] / 1e6, a["p50_us"],
                                                         d["rows_per_s"] / 1e6, d["p50_us"],
                                                         d["rows_per_s"] / a["rows_per_s"]))


def step_table(step):
    modes = ["compute_only", "prefetch", "on_demand", "in_process"]
    print("\n| compute/layer (us) | " + " | ".join(modes) + " |")
    print("|---|" + "---|" * len(modes))
    for r in step:
        cols = []
        for m in modes:
            if m not in r:
                cols.append("-")
            elif "overhead_pct" in r[m]:
                cols.append("%.1f ms (%+.1f %%)" % (r[m]["step_ms_p50"], r[m]["overhead_pct"]))
            else:
                cols.append("%.1f ms" % r[m]["step_ms_p50"])
        print("| %d | %s |" % (r["compute_us"], " | ".join(cols)))


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    d = sys.argv[1]
    with open(os.path.join(d, "pull.json")) as f:
        data = json.load(f)
    pull_tables(data["pull"])
    if data.get("push"):
        push_table(data["push"])
    if os.path.exists(os.path.join(d, "step.json")):
        with open(os.path.join(d, "step.json")) as f:
            step_table(json.load(f)["step"])


if __name__ == "__main__":
    main()
