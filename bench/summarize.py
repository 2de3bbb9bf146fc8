#!/usr/bin/python3
"""Prints the ratio table of the micro-benchmarks (medians) as Markdown.

Each workload is divided by the baseline measured in the same run; a missing baseline is an
error, never a ratio against nothing.
"""
import json
import sys

PAIRS = [
    ("BM_Hash_DemoDefaults", "BM_WriteIds", "row ids/s", "hash, demo defaults (16 ids/token) vs writing ids"),
    ("BM_Hash_Flash", "BM_WriteIds", "row ids/s", "hash, V4.1-Flash (24 ids/token) vs writing ids"),
    ("BM_ApplyAdam/64", "BM_RowCopy/64", "rows/s", "Adam apply, dim 64 f32 vs copying its bytes"),
    ("BM_ApplyAdam/256", "BM_RowCopy/256", "rows/s", "Adam apply, dim 256 f32 vs copying its bytes"),
    ("BM_Gather/264", "BM_MemcpyGather/264", "rows/s", "gather 264 B rows (version-checked) vs memcpy gather"),
    ("BM_Gather/1024", "BM_MemcpyGather/1024", "rows/s", "gather 1 KiB rows (version-checked) vs memcpy gather"),
]


def medians(path):
    with open(path) as f:
        data = json.load(f)
    out = {}
    for b in data["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        name = b["run_name"].replace("/real_time", "")
        out[name] = b["items_per_second"]
    return out


def main():
    m = medians(sys.argv[1])
    print("| workload | median | baseline median | ratio |")
    print("|---|---|---|---|")
    failed = False
    for work, base, unit, label in PAIRS:
        if work not in m or base not in m:
            print(f"| {label} | missing | missing | n/a |")
            failed = True
            continue
        print(f"| {label} | {m[work] / 1e6:.2f} M {unit} | {m[base] / 1e6:.2f} M {unit} | {m[work] / m[base]:.2f}x |")
    if failed:
        sys.exit("summarize: a workload or its baseline did not run")


if __name__ == "__main__":
    main()
