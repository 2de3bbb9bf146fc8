#!/usr/bin/python3
"""Draws the benchmark plots (PNG, with gnuplot) from the JSON that make bench writes.

Usage: bench/plot.py RESULTS_DIR   (reads pull.json and step.json, writes *.png there)

Plots:
  pull_rows_<dist>_t<threads>.png   rows/s vs batch size, one panel per row size, every path
  pull_p50_decode.png               p50 latency of decode-sized pulls (<= 384 rows) per path
  step_overhead.png                 simulated step overhead (%) vs per-layer compute time
Exits non-zero if gnuplot is missing or fails: a benchmark without its plots is incomplete.
"""
import json
import os
import subprocess
import sys

PATHS = ["in_process", "one_sided", "rma_get", "rpc_shm", "rpc_tcp", "redis"]


def gnuplot(script):
    script = "set termoption noenhanced\n" + script  # Underscores in path names are not subscripts.
    r = subprocess.run(["gnuplot"], input=script, text=True, capture_output=True)
    if r.returncode != 0:
        sys.exit("plot.py: gnuplot failed: " + r.stderr)


def pull_plots(out, pull):
    combos = sorted({(p["dist"], p["threads"]) for p in pull})
    sizes = sorted({p["row_bytes"] for p in pull})
    for dist, threads in combos:
        name = os.path.join(out, "pull_rows_%s_t%d.png" % (dist, threads))
        cols = min(len(sizes), 3)
        rows = (len(sizes) + cols - 1) // cols
        lines = ['set terminal pngcairo size %d,%d font "sans,9"' % (420 * cols, 330 * rows),
                 'set output "%s"' % name,
                 'set multiplot layout %d,%d title "pull throughput, %s rows, %d client thread(s) (same run)"'
                 % (rows, cols, dist, threads),
                 "set logscale xy", "set grid", "set key bottom right font ',7'",
                 "set xlabel 'batch (rows)'", "set ylabel 'M rows/s'"]
        for rb in sizes:
            lines.append("set title '%d-byte rows'" % rb)
            plots = []
            for path in PATHS:
                pts = sorted((p["batch"], p["rows_per_s"] / 1e6) for p in pull
                             if p["dist"] == dist and p["threads"] == threads and p["row_bytes"] == rb
                             and p["path"] == path and p["rows_per_s"] > 0)
                if not pts:
                    continue
                data = "\n".join("%d %g" % xy for xy in pts) + "\ne\n"
                plots.append(("'-' using 1:2 with linespoints title '%s'" % path, data))
            if plots:
                lines.append("plot " + ", ".join(p for p, _ in plots))
                lines.extend(d for _, d in plots)
        lines.append("unset multiplot")
        gnuplot("\n".join(lines) + "\n")
        print("wrote", name)
    small = [p for p in pull if p["batch"] <= 384 and p["threads"] == 1 and p["dist"] == "uniform"]
    if small:
        name = os.path.join(out, "pull_p50_decode.png")
        labels = sorted({(p["row_bytes"], p["batch"]) for p in small})
        lines = ['set terminal pngcairo size 900,420 font "sans,9"', 'set output "%s"' % name,
                 "set title 'decode-sized pulls: p50 latency per call (uniform rows, 1 thread)'",
                 "set style data histograms", "set style histogram clustered gap 1", "set style fill solid 0.8",
                 "set logscale y", "set ylabel 'p50 us'", "set grid ytics", "set key top left font ',8'",
                 "set xtics rotate by -30"]
        header = "label " + " ".join(PATHS)
        rows_txt = []
        for rb, b in labels:
            vals = []
            for path in PATHS:
                v = [p["p50_us"] for p in small if p["row_bytes"] == rb and p["batch"] == b and p["path"] == path]
                vals.append("%g" % v[0] if v and v[0] > 0 else "NaN")
            rows_txt.append('"%d rows x %d B" ' % (b, rb) + " ".join(vals))
        data = "\n".join(rows_txt) + "\ne\n"
        plot = ", ".join("'-' using %d:xtic(1) title '%s'" % (i + 2, path) for i, path in enumerate(PATHS))
        lines.append("plot " + plot)
        lines.extend([data] * len(PATHS))
        gnuplot("\n".join(lines) + "\n")
        print("wrote", name, "(" + header + ")")


def step_plot(out, step):
    name = os.path.join(out, "step_overhead.png")
    lines = ['set terminal pngcairo size 700,420 font "sans,9"', 'set output "%s"' % name,
             "set title 'simulated training step: overhead vs compute only (30 layers, Engram at 1 and 15)'",
             "set logscale x", "set grid", "set xlabel 'compute per layer (us, forward; backward the same)'",
             "set ylabel 'step time overhead (%, log; values under 0.1 drawn at 0.1)'", "set key top right",
             "set logscale y", "set yrange [0.1:*]",
             "f1(x) = 1"]
    plots, datas = ["f1(x) title '1 %' dashtype 2"], []
    for mode in ["prefetch", "on_demand", "in_process"]:
        pts = [(r["compute_us"], max(0.1, r[mode]["overhead_pct"])) for r in step
               if mode in r and "overhead_pct" in r[mode]]
        if pts:
            plots.append("'-' using 1:2 with linespoints title '%s'" % mode)
            datas.append("\n".join("%d %g" % xy for xy in sorted(pts)) + "\ne\n")
    lines.append("plot " + ", ".join(plots))
    lines.extend(datas)
    gnuplot("\n".join(lines) + "\n")
    print("wrote", name)


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    out = sys.argv[1]
    did = False
    if os.path.exists(os.path.join(out, "pull.json")):
        with open(os.path.join(out, "pull.json")) as f:
            pull_plots(out, json.load(f)["pull"])
        did = True
    if os.path.exists(os.path.join(out, "step.json")):
        with open(os.path.join(out, "step.json")) as f:
            step_plot(out, json.load(f)["step"])
        did = True
    if not did:
        sys.exit("plot.py: no pull.json or step.json in " + out)


if __name__ == "__main__":
    main()
