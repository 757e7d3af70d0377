#!/usr/bin/env python3
"""The ratios of bench/run-all.sh, judged over its rounds.

Reads the JSON lines of a run (bench-results.jsonl) and, for every pair of
runs made in the same round (product against floor, file store against
memory), prints the ratio of each figure, then per figure the median and
the spread (lowest and highest) over the rounds, as a Markdown table.

    python3 bench/summarize.py bench-results.jsonl
"""

import json
import statistics
import sys

# (what is compared, label of the numerator, label of the denominator,
#  scenario, the fields that must match, the figures to divide)
COMPARISONS = [
    ("product / floor", "product", "floor", "idle", (), ("host_rss_per_socket_bytes",)),
    (
        "product / floor",
        "product",
        "floor",
        "connect",
        ("journey",),
        ("connects_per_sec", "host_cpu_per_connect_us", "handshake_p50_ms", "handshake_p99_ms"),
    ),
    (
        "product / floor",
        "product",
        "floor",
        "fanout",
        ("sockets", "rate"),
        (
            "latency_p50_ms",
            "latency_p99_ms",
            "host_cpu_per_delivery_us",
            "publish_answer_p50_ms",
            "publish_answer_p99_ms",
        ),
    ),
    # The whole two-node service (both nodes' and Redis' CPU) against one
    # floor server of the same round.
    (
        "two nodes on Redis / floor",
        "two-nodes",
        "floor",
        "fanout",
        ("sockets", "rate"),
        ("latency_p50_ms", "latency_p99_ms", "host_cpu_per_delivery_us"),
    ),
    ("file / memory", "file", "memory", "connect", (), ("connects_per_sec", "host_cpu_per_connect_us")),
    (
        "file / memory",
        "file",
        "memory",
        "fanout",
        ("sockets", "rate"),
        ("latency_p50_ms", "latency_p99_ms", "host_cpu_per_delivery_us"),
    ),
    # bench/scale-out.sh: the "host" CPU there is Redis' CPU.
    ("cluster / one redis", "cluster", "redis", "connect", (), ("connects_per_sec", "host_cpu_per_connect_us")),
] + [
    (
        "cluster / one redis",
        "cluster",
        "redis",
        scenario,
        ("sockets", "rate"),
        ("latency_p50_ms", "latency_p99_ms", "host_cpu_per_delivery_us"),
    )
    for scenario in ("fanout", "inboxes")
]


def ratios(records, numerator, denominator, scenario, keys, figure):
    """Per shape (the values of `keys`), the ratios of `figure` by round."""
    runs = {}
    for record in records:
        if record.get("scenario") != scenario or "round" not in record:
            continue
        if record.get("label") not in (numerator, denominator):
            continue
        shape = tuple(record.get(key) for key in keys)
        runs.setdefault(shape, {}).setdefault(record["round"], {})[record["label"]] = record
    found = {}
    for shape, rounds in runs.items():
        for pair in rounds.values():
            top = pair.get(numerator, {}).get(figure)
            bottom = pair.get(denominator, {}).get(figure)
            if isinstance(top, (int, float)) and isinstance(bottom, (int, float)) and bottom:
                found.setdefault(shape, []).append(top / bottom)
    return found


def main(path):
    with open(path, encoding="utf-8") as lines:
        records = [json.loads(line) for line in lines if line.strip().startswith("{")]
    print("| comparison | scenario | shape | figure | rounds | median | lowest | highest |")
    print("|---|---|---|---|---|---|---|---|")
    for name, numerator, denominator, scenario, keys, figures in COMPARISONS:
        for figure in figures:
            found = ratios(records, numerator, denominator, scenario, keys, figure)
            for shape, values in sorted(found.items(), key=lambda item: str(item[0])):
                label = ", ".join(f"{key} {value}" for key, value in zip(keys, shape)) or "-"
                print(
                    f"| {name} | {scenario} | {label} | {figure} | {len(values)} | "
                    f"{statistics.median(values):.2f} | {min(values):.2f} | {max(values):.2f} |"
                )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "bench-results.jsonl")
