#!/usr/bin/env python3
"""Issue 16's failover figure, measured on real processes on loopback; not a test (nothing here passes or fails),
a benchmark whose numbers go into docs/cluster.md.

  python3 scripts/failover_figures.py [--kills 20] [--partitions 3] [--hang] [--json out.json]

From the SIGKILL of a partition's leader to the first acks=all produce acknowledged by the new leader: three
brokers, a topic of replication factor 3 with min.insync.replicas=2; before each kill every replica is in the ISR
and an acks=all produce to the leader succeeds; after it, the script asks the survivors' Metadata every 20 ms and,
as soon as one names a new leader, sends it a raw Produce v3 (acks=-1, one small batch) until one is acknowledged
(error 0). A raw client, not a library: no client backoff or metadata refresh interval is part of the figure. The
killed broker is restarted and must rejoin every ISR before the next kill. Median, max and min over --kills kills,
with the default timeouts (Kafka's: broker.session.timeout.ms 9000, broker.heartbeat.interval.ms 2000,
controller.quorum.election.timeout.ms 1000) and with tuned ones (--tuned-* flags). The figure also splits off
"elected": the kill until a survivor's Metadata names the new leader, and gives the figures again for the kills
whose leader was also the active controller (a controller election comes first) and for the others.

A SIGKILLed broker's port refuses connections, which its followers report and the controller confirms, so it is
fenced without waiting for its session to expire. --hang measures the other case instead: SIGSTOP (a hung process,
whose port still accepts), so only the session timeout fences it; the node gets SIGCONT instead of a restart.

SLUICE_BIN overrides the binary (default target/release/sluice).
"""

import argparse
import collections
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "broker" / "tests" / "clients"))

from confluent_kafka.admin import NewTopic  # noqa: E402

from cluster_util import Cluster, produce_v3  # noqa: E402
from conftest import BINARY  # noqa: E402

TOPIC = "failover"
# Polling period of the survivors' Metadata and of the produce retries: the figure's resolution.
POLL_S = 0.02
# A kill that has not failed over within this long is reported as a failure of the run, not as a figure.
FAILOVER_MAX_S = 120
# One produce attempt: short, so that an attempt a broker holds (an ISR still counting the dead broker) does not
# hide a later success by much.
PRODUCE_TIMEOUT_MS = 2000


def parse_arguments():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--tuned-session-ms", type=int, default=2000)
    parser.add_argument("--tuned-heartbeat-ms", type=int, default=500)
    parser.add_argument("--tuned-election-ms", type=int, default=300)
    parser.add_argument("--only", choices=["default", "tuned"], help="run one of the two settings")
    parser.add_argument("--hang", action="store_true", help="SIGSTOP the leader instead of SIGKILL")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()


def partition_view(cluster, node_id, partition):
    return cluster.metadata(node_id).topics.get(TOPIC, {}).get(partition)


def wait_full_isr(cluster, partitions, timeout_s=120):
    def whole():
        for node_id in cluster.live():
            views = cluster.metadata(node_id).topics.get(TOPIC)
            if views is None or len(views) != partitions:
                return False
            if any(view.leader < 0 or sorted(view.isr) != sorted(view.replicas) for view in views.values()):
                return False
        return True

    cluster.wait_for("every replica in every ISR", whole, timeout_s)


def produce_until_acknowledged(address, partition, deadline):
    """Raw acks=all produces to `address` until one answers 0: (True or False, {answer: count} of the others)."""
    answers = collections.Counter()
    while time.monotonic() < deadline:
        try:
            error, _ = produce_v3(address, TOPIC, partition, [b"failover-probe"], acks=-1,
                                  timeout_ms=PRODUCE_TIMEOUT_MS)
        except (OSError, ConnectionError, AssertionError) as failure:
            error = type(failure).__name__
        if error == 0:
            return True, answers
        answers[error] += 1
        time.sleep(POLL_S)
    return False, answers


def one_kill(cluster, partition, hang):
    """Kills (or with `hang`, stops) the leader of `partition` and measures; returns a dict of the kill's figures."""
    first = cluster.live()[0]
    view = partition_view(cluster, first, partition)
    leader = view.leader
    controller = cluster.metadata(first).controller
    error, _ = produce_v3(cluster.nodes[leader].bootstrap, TOPIC, partition, [b"before"], acks=-1)
    assert error == 0, f"acks=all to leader {leader} of partition {partition} before the kill answered {error}"
    if hang:
        cluster.pause(leader)
    else:
        cluster.kill(leader)
    killed_at = time.monotonic()
    deadline = killed_at + FAILOVER_MAX_S
    survivors = [node_id for node_id in cluster.nodes if node_id != leader]
    elected_s = None
    errors = []
    while time.monotonic() < deadline:
        new_leader = None
        for node_id in survivors:
            try:
                seen = partition_view(cluster, node_id, partition)
            except (OSError, ConnectionError, AssertionError) as failure:
                errors.append(repr(failure))
                continue
            if seen is not None and seen.leader not in (-1, leader):
                new_leader = seen.leader
                break
        if new_leader is None:
            time.sleep(POLL_S)
            continue
        if elected_s is None:
            elected_s = time.monotonic() - killed_at
        # One round of produce attempts to this leader; back to Metadata if it stops leading.
        acknowledged, answers = produce_until_acknowledged(
            cluster.nodes[new_leader].bootstrap, partition, min(deadline, time.monotonic() + 5))
        if answers:
            errors.append(f"node {new_leader} answered {dict(answers)}")
        if acknowledged:
            return {"partition": partition, "killed": leader, "controller_killed": leader == controller,
                    "new_leader": new_leader, "elected_ms": elected_s * 1000,
                    "acknowledged_ms": (time.monotonic() - killed_at) * 1000, "errors_before": errors[-3:]}
    raise AssertionError(f"partition {partition}: no acks=all produce acknowledged within {FAILOVER_MAX_S} s of "
                         f"killing node {leader}: {errors[-5:]}\n{cluster.log_tails()}")


def failover(root, label, extra_config, kills, partitions, hang):
    cluster = Cluster(root, voter_count=3, extra_config=extra_config)
    results = []
    try:
        cluster.start()
        admin = cluster.admin()
        topic = NewTopic(TOPIC, partitions, 3, config={"min.insync.replicas": "2"})
        admin.create_topics([topic], request_timeout=30)[TOPIC].result(timeout=60)
        for kill in range(kills):
            wait_full_isr(cluster, partitions)
            result = one_kill(cluster, kill % partitions, hang)
            results.append(result)
            waited = result["acknowledged_ms"] - result["elected_ms"]
            print(f"  {label} kill {kill + 1}/{kills}: node {result['killed']} (leader of partition "
                  f"{result['partition']}{', the active controller' if result['controller_killed'] else ''}); "
                  f"node {result['new_leader']} elected after {result['elected_ms']:.0f} ms, acks=all acknowledged "
                  f"after {result['acknowledged_ms']:.0f} ms"
                  + (f" (answers before: {result['errors_before']})" if waited > 500 else ""), flush=True)
            if hang:
                cluster.resume(result["killed"])
            else:
                cluster.restart(result["killed"])
        wait_full_isr(cluster, partitions)
        cluster.close()
    finally:
        cluster.kill_all()
    figures = {"settings": extra_config, "signal": "SIGSTOP" if hang else "SIGKILL"}
    figures.update(summarise(results))
    # A killed leader that was also the active controller waits for a controller election too: its own figures.
    for name, chosen in (("controller", True), ("not_controller", False)):
        subset = [result for result in results if result["controller_killed"] == chosen]
        if subset:
            figures[f"leader_was_{name}"] = summarise(subset)
    return figures


def summarise(results):
    acknowledged = [result["acknowledged_ms"] for result in results]
    elected = [result["elected_ms"] for result in results]
    return {
        "kills": len(results),
        "acknowledged_median_ms": round(statistics.median(acknowledged)),
        "acknowledged_max_ms": round(max(acknowledged)),
        "acknowledged_min_ms": round(min(acknowledged)),
        "elected_median_ms": round(statistics.median(elected)),
        "elected_max_ms": round(max(elected)),
    }


def main():
    arguments = parse_arguments()
    assert BINARY.exists(), f"{BINARY} is missing: cargo build --release -p sluice-broker"
    settings = {
        "default": {},
        "tuned": {
            "broker.session.timeout.ms": arguments.tuned_session_ms,
            "broker.heartbeat.interval.ms": arguments.tuned_heartbeat_ms,
            "controller.quorum.election.timeout.ms": arguments.tuned_election_ms,
        },
    }
    figures = {"binary": str(BINARY), "partitions": arguments.partitions}
    # Removed after a run that measured everything; kept (and named) when one fails, for its nodes' logs.
    root = Path(tempfile.mkdtemp(prefix="sluice-failover-"))
    try:
        for label, extra in settings.items():
            if arguments.only and label != arguments.only:
                continue
            directory = root / label
            directory.mkdir()
            print(f"{label}: {extra or 'Kafka defaults'}", flush=True)
            figures[label] = failover(directory, label, extra, arguments.kills, arguments.partitions, arguments.hang)
            print(json.dumps(figures[label]), flush=True)
    except BaseException:
        print(f"failed: the nodes' logs are in {root}", flush=True)
        raise
    shutil.rmtree(root)
    print(json.dumps(figures, indent=2))
    if arguments.json:
        arguments.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
