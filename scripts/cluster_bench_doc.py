#!/usr/bin/env python3
"""Writes docs/benchmarks-cluster.md from the results of `scripts/bench.sh --cluster N` (issue 16's figure).

usage: cluster_bench_doc.py RESULTS DOC N RUNS QUICK ROOT

Every run's JSON (sluice-bench --json) carries the measured period's publish rate and latency percentiles, each
broker's CPU in cores over that period (`broker_cpu_cores_each`, from /proc/PID/stat utime + stime), the load
generator's and the whole machine's (/proc/stat). CPU-seconds = cores × measured seconds; GB = 10^9 bytes of payload
acknowledged in the measured period. The replication cost is (all brokers' CPU-s per GB at RF=N − at RF=1) / (N − 1):
CPU-seconds per GB of payload copied to one more replica.
"""

import glob
import json
import os
import re
import shutil
import statistics
import subprocess
import sys

results, doc, replicas, runs, quick, root = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5] == "1", sys.argv[6]
KINDS = (("tput", "(i) max throughput, acks=all"), ("lat", "(ii) fixed rate, acks=all"))
FACTORS = (1, replicas)


def sh(command):
    try:
        return subprocess.run(command, shell=True, capture_output=True, text=True, timeout=10).stdout.strip()
    except Exception:
        return "?"


def read(path, default=""):
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return default


def load_runs(kind, factor):
    """[(run index, figures)] of one kind and replication factor, in run order."""
    out = []
    for path in glob.glob(os.path.join(results, f"cluster-{kind}-rf{factor}-*.json")):
        run = int(re.search(r"-(\d+)\.json$", path).group(1))
        try:
            data = json.load(open(path))
        except Exception:
            continue
        out.append((run, figures(data, path, read(path.replace(".json", ".load")), read(path.replace(".json", ".psi")))))
    return sorted(out)


def io_pressure(text):
    """(some %, full %) of a run's wall time stalled on I/O, from the two `io_pressure` lines bench.sh wrote."""
    try:
        (t0, some0, full0), (t1, some1, full1) = [tuple(map(float, line.split())) for line in text.splitlines()[:2]]
    except ValueError:
        return None, None
    wall_us = (t1 - t0) * 1e6
    return ((some1 - some0) / wall_us * 100, (full1 - full0) / wall_us * 100) if wall_us > 0 and some1 > 0 else (None, None)


def figures(data, path, load, psi):
    io_some, io_full = io_pressure(psi)
    seconds = data["publish_seconds"]
    gigabytes = data["publish_mb_per_s"] * seconds / 1000
    each = data.get("broker_cpu_cores_each") or []
    cpu_s_each = [cores * seconds if cores is not None else None for cores in each]
    cpu_s = sum(cpu_s_each) if each and None not in cpu_s_each else None
    brokers = data.get("broker_cpu_cores")
    generator = data.get("generator_cpu_cores")
    machine = data.get("machine_cpu_cores")
    other = machine - brokers - generator if None not in (machine, brokers, generator) else None
    return {
        "path": path,
        "mb_per_s": data["publish_mb_per_s"],
        "consume_mb_per_s": data["consume_mb_per_s"],
        "p50": data["publish_latency_us"]["p50"] / 1000,
        "p99": data["publish_latency_us"]["p99"] / 1000,
        "p999": data["publish_latency_us"]["p999"] / 1000,
        "delay_p99": data["publish_delay_us"]["p99"] / 1000 if data["publish_delay_us"].get("count") else None,
        "seconds": seconds,
        "gb": gigabytes,
        "cpu_s_each": cpu_s_each,
        "cpu_s": cpu_s,
        "cpu_s_per_gb": cpu_s / gigabytes if cpu_s is not None and gigabytes > 0 else None,
        "broker_cores": brokers,
        "generator_cores": generator,
        "machine_cores": machine,
        "other_cores": other,
        "failed": data.get("failed_messages", 0),
        "retries": data.get("retries", 0),
        "errors": data.get("error_count", 0),
        "load": load,
        "io_some": io_some,
        "io_full": io_full,
    }


def median(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def fmt(value, digits=1):
    if value is None:
        return "–"
    if abs(value) >= 10000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def pct(cores):
    return "–" if cores is None else f"{cores * 100:.0f}%"


def ratio(a, b):
    return None if a is None or b is None or b == 0 else a / b


def cost(per_gb_n, per_gb_1):
    return None if per_gb_n is None or per_gb_1 is None else (per_gb_n - per_gb_1) / (replicas - 1)


data = {(kind, factor): load_runs(kind, factor) for kind, _ in KINDS for factor in FACTORS}
rate_mb = read(os.path.join(results, "cluster-rate-mb.txt"), "?")
node_names = [f"node {i}" for i in range(1, replicas + 1)]

# Every run, in the order of the figures (the run order is in the per-run load averages' file names).
run_lines = [
    "| load | RF | run | publish MB/s | p50 ms | p99 ms | p99.9 ms | "
    + " | ".join(f"{n} CPU-s" for n in node_names)
    + " | brokers CPU-s | GB | CPU-s/GB | generator | machine busy | other | I/O stall some / full | load avg (1/5/15 min) |",
    "|---" * (14 + replicas) + "|",
]
for kind, kind_name in KINDS:
    rows = sorted(((run, factor, f) for factor in FACTORS for run, f in data[(kind, factor)]), key=lambda r: r[0])
    for run, factor, f in rows:
        run_lines.append("| " + " | ".join(
            [kind_name.split(" ")[0] + (f" {rate_mb} MB/s" if kind == "lat" else " max"), str(factor), str(run),
             fmt(f["mb_per_s"]), fmt(f["p50"], 2), fmt(f["p99"], 2), fmt(f["p999"], 2)]
            + [fmt(v, 2) for v in f["cpu_s_each"]]
            + [fmt(f["cpu_s"], 2), fmt(f["gb"], 3), fmt(f["cpu_s_per_gb"], 2), pct(f["generator_cores"]),
               pct(f["machine_cores"]), pct(f["other_cores"]),
               "–" if f["io_some"] is None else f"{f['io_some']:.0f}% / {f['io_full']:.0f}%", f["load"] or "–"]) + " |")

# Medians side by side, with RF=N / RF=1.
median_lines = [
    f"| load | metric | RF=1 | RF={replicas} | RF={replicas} / RF=1 |",
    "|---|---|---|---|---|",
]
summary = {}
for kind, kind_name in KINDS:
    label = kind_name + (f" at {rate_mb} MB/s" if kind == "lat" else "")
    per = {}
    for factor in FACTORS:
        fs = [f for _, f in data[(kind, factor)]]
        per[factor] = {
            "mb_per_s": median([f["mb_per_s"] for f in fs]),
            "p50": median([f["p50"] for f in fs]),
            "p99": median([f["p99"] for f in fs]),
            "p999": median([f["p999"] for f in fs]),
            "broker_cores": median([f["broker_cores"] for f in fs]),
            "each": [median([f["cpu_s_each"][i] / f["seconds"] if i < len(f["cpu_s_each"]) and f["cpu_s_each"][i] is not None else None for f in fs])
                     for i in range(replicas)],
            "cpu_s_per_gb": median([f["cpu_s_per_gb"] for f in fs]),
            "runs": len(fs),
        }
    summary[kind] = per
    for key, name, digits in (("mb_per_s", "publish MB/s", 1), ("p50", "publish p50 ms", 2), ("p99", "publish p99 ms", 2),
                              ("p999", "publish p99.9 ms", 2), ("cpu_s_per_gb", "brokers' CPU-s per GB", 2)):
        a, b = per[1][key], per[replicas][key]
        median_lines.append(f"| {label} | {name} | {fmt(a, digits)} | {fmt(b, digits)} | {fmt(ratio(b, a), 2)} |")
    a, b = per[1]["broker_cores"], per[replicas]["broker_cores"]
    each = lambda factor: " + ".join(pct(c) for c in per[factor]["each"])
    median_lines.append(f"| {label} | brokers' CPU (cores; {' + '.join(node_names)}) | {pct(a)} ({each(1)}) | "
                        f"{pct(b)} ({each(replicas)}) | {fmt(ratio(b, a), 2)} |")

# The replication cost: from the medians, and pair by pair (run i's RF=1 and RF=N).
cost_lines = ["| load | from medians | pair by pair (run 1, 2, …) |", "|---|---|---|"]
for kind, kind_name in KINDS:
    from_medians = cost(summary[kind][replicas]["cpu_s_per_gb"], summary[kind][1]["cpu_s_per_gb"])
    ones = dict(data[(kind, 1)])
    pairs = [cost(f["cpu_s_per_gb"], ones[run]["cpu_s_per_gb"]) for run, f in data[(kind, replicas)] if run in ones]
    cost_lines.append(f"| {kind_name}{f' at {rate_mb} MB/s' if kind == 'lat' else ''} | **{fmt(from_medians, 2)} CPU-s per replicated GB** | "
                      + (", ".join(fmt(p, 2) for p in pairs) or "–") + " |")

# What the brokers logged.
log_lines = ["| node | WARN | ERROR | proposing ISR | log lines |", "|---|---|---|---|---|"]
notable = []
for i in range(1, replicas + 1):
    text = read(os.path.join(results, f"node{i}.log"))
    lines = text.splitlines()
    warn = sum(" WARN " in line or line.startswith("WARN") for line in lines)
    error = sum(" ERROR " in line or line.startswith("ERROR") for line in lines)
    isr = sum("proposing ISR" in line for line in lines)
    log_lines.append(f"| node {i} | {warn} | {error} | {isr} | {len(lines)} |")
    seen = set()
    for line in read(os.path.join(results, f"node{i}.notable.txt")).splitlines():
        # One example of each kind of message (numbers and names stripped to compare).
        shape = re.sub(r"[0-9a-f]{6,}|\d+", "#", re.sub(r"^\S+\s+", "", line))[:120]
        if shape not in seen and len(seen) < 6:
            seen.add(shape)
            notable.append(f"node {i}: {line[:300]}")

# Plots: the median run (by publish MB/s for (i), p99 for (ii)) of each kind and factor.
plots_dir = os.path.join(os.path.dirname(doc), "plots")
os.makedirs(plots_dir, exist_ok=True)
plot_lines = []
for kind, kind_name in KINDS:
    for factor in FACTORS:
        fs = sorted((f for _, f in data[(kind, factor)]), key=lambda f: f["mb_per_s" if kind == "tput" else "p99"])
        if not fs:
            continue
        svg = fs[len(fs) // 2]["path"].replace(".json", ".svg")
        if os.path.exists(svg):
            target = os.path.join(plots_dir, f"cluster-{kind}-rf{factor}.svg")
            shutil.copyfile(svg, target)
            plot_lines.append(f"![{kind_name}, RF={factor}](plots/{os.path.basename(target)})")

failures = sum(f["failed"] + f["errors"] for runs_ in data.values() for _, f in runs_)
retries = sum(f["retries"] for runs_ in data.values() for _, f in runs_)
commands = sorted({re.sub(r"--bootstrap \S+", "--bootstrap HOST:PORT,…", read(p)) for p in glob.glob(os.path.join(results, "cluster-*-1.cmd"))})
load_start, load_end = read(os.path.join(results, "load-start.txt")), read(os.path.join(results, "load-end.txt"))
tput_n = median([f["mb_per_s"] for _, f in data[("tput", replicas)]])
rate_source = (f"half of RF={replicas}'s median max throughput from (i), {fmt(tput_n)} MB/s"
               if tput_n is not None and rate_mb == str(max(1, int(tput_n / 2))) else "the rate given with `--cluster-rate-mb`")
settle = " ".join(read(os.path.join(results, "cluster-settle.txt")).splitlines()[1:2]).strip()
cpu = sh("lscpu | sed -n 's/^Model name: *//p'")

text = f"""# Replication's cost: RF={replicas} against RF=1 on one {replicas}-broker cluster (issue 16)

Written by `scripts/bench.sh --cluster {replicas}{' --quick' if quick else ''}` on {sh('date -u +%Y-%m-%dT%H:%MZ')}, commit `{sh(f'git -C {root} rev-parse --short HEAD')}`.
{'**Quick mode: a few seconds per run and one run per side — a smoke test of the script, not a measurement.**' if quick else f'Medians of {runs} runs per load and replication factor, RF=1 and RF={replicas} alternating in one session.'}

## How it was measured
- {sh('nproc')} vCPUs ({cpu}), {sh("free -g | awk '/Mem:/ {print $2}'")} GiB RAM, Linux {sh('uname -r')}, {sh("df -T / | awk 'NR==2 {print $2}'")} on virtio-blk.
  **The machine is shared**: other sessions' builds and tests ran beside this one. Load average (1/5/15 min) at
  the start: {load_start or '–'}; at the end: {load_end or '–'}; before each run: in the table below. "machine busy"
  is the whole machine's busy CPU over each measured period (/proc/stat), and "other" is that minus the brokers
  and the load generator: other sessions' work, plus kernel work no process is charged with (network softirq, the
  ext4 journal thread), of which this run causes some. "I/O stall" is the share of each run's wall time (set-up and
  warm-up included) in which some / all non-idle tasks of the machine waited for the disk (/proc/pressure/io) — the
  brokers' own fdatasyncs, and other sessions' writes, which the brokers' fdatasyncs then queue behind.
- One cluster of {replicas} brokers on loopback (`scripts/cluster.sh start {replicas}`, one shard each so that {replicas}
  brokers fit 2 cores; the first three are also the metadata quorum's voters), `log.flush.policy = fsync` (the default):
  an acks=all produce is answered once the high watermark covers it, i.e. once every ISR member that counts has
  it fdatasync'd. The load generator, `sluice-bench`, runs on the same two cores.
- Each run creates a fresh topic of 16 partitions — replication factor 1, or {replicas}{' with `min.insync.replicas` = 2' if replicas >= 3 else ''} — produces to
  each partition's leader (from Metadata), and deletes the topic afterwards. RF=1 and RF={replicas} alternate, the order
  within each pair alternating too.
- Loads, 1 KiB messages, 4 producers and 4 consumers (the consumers read from the leaders, so they cost the same at
  both factors): (i) as fast as possible, acks=all — workload (b)'s shape; (ii) acks=all at a fixed
  **{rate_mb} MB/s**, workload (c)'s shape at {rate_source} ((c)'s fixed 50 MB/s is not
  used: what {replicas} brokers replicating on two shared cores sustain moves with the machine's load, so the rate is
  taken from the run or given).
- CPU: each broker's utime + stime from /proc/PID/stat over the measured period (its io_uring worker threads
  included). CPU-s/GB = all brokers' CPU-seconds / GB (10^9 bytes) of payload acknowledged in the period.
  **Replication cost** = (CPU-s/GB at RF={replicas} − at RF=1) / ({replicas} − 1): CPU-seconds per GB copied to one more replica
  (the follower's fetch, append and fdatasync, and the leader's side of serving it and tracking the high watermark).
- Before the first measured run, a short RF={replicas} run that is not counted waits for all {replicas} brokers to have
  registered and takes the fresh cluster's first writes: `{settle or 'not run'}`.
- Failed messages or errors over all runs: {failures}; produce retries after stale-leader errors: {retries}.

## Medians, side by side
{chr(10).join(median_lines)}

## Replication cost
{chr(10).join(cost_lines)}

## Every run
{chr(10).join(run_lines)}

## The brokers' logs
{chr(10).join(log_lines)}

{('Examples (one of each kind):' + chr(10) + chr(10) + '```' + chr(10) + chr(10).join(notable) + chr(10) + '```') if notable else 'No WARN, ERROR or ISR change in any node log.'}

## Commands
```
{chr(10).join(commands)}
```

## Latency percentiles (median runs)
{chr(10).join(plot_lines)}
"""
with open(doc, "w") as f:
    f.write(text)
print(chr(10).join(median_lines + [""] + cost_lines))
print(f"wrote {doc}", file=sys.stderr)
