"""One consumer-group member as its own process, so that tests can stop it cleanly (SIGTERM) or kill it (SIGKILL).

Usage: group_member.py BOOTSTRAP TOPIC GROUP [--instance ID] [--session-ms N] [--assignor NAME]

It subscribes, and for each message: prints `P <partition> <offset>` (that is the processing), then commits the
message's next offset synchronously. So a message is committed only after it was processed, and a member that is
killed between the two leaves at most one processed-but-uncommitted message per partition. It also prints
`A <partitions>` on each assignment, `R <partitions>` on each revocation and `C <partition> <offset> <error>` when a
commit fails. On SIGTERM it closes the consumer (leaving the group) and exits 0. Every line is flushed at once.
"""

import argparse
import signal
import sys

from confluent_kafka import Consumer, KafkaException

stopping = False


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("bootstrap")
    parser.add_argument("topic")
    parser.add_argument("group")
    parser.add_argument("--instance")
    parser.add_argument("--session-ms", type=int, default=6000)
    parser.add_argument("--assignor", default="range,roundrobin")
    arguments = parser.parse_args()
    config = {
        "bootstrap.servers": arguments.bootstrap,
        "group.id": arguments.group,
        "auto.offset.reset": "earliest",
        "enable.auto.commit": False,
        "session.timeout.ms": arguments.session_ms,
        "heartbeat.interval.ms": 500,
        "partition.assignment.strategy": arguments.assignor,
        "fetch.wait.max.ms": 100,
    }
    if arguments.instance:
        config["group.instance.id"] = arguments.instance
    consumer = Consumer(config)

    def say(*words):
        print(*words, flush=True)

    def on_assign(_consumer, partitions):
        say("A", ",".join(str(p.partition) for p in sorted(partitions, key=lambda p: p.partition)) or "-")

    def on_revoke(_consumer, partitions):
        say("R", ",".join(str(p.partition) for p in sorted(partitions, key=lambda p: p.partition)) or "-")

    def stop(_signal, _frame):
        global stopping
        stopping = True

    signal.signal(signal.SIGTERM, stop)
    consumer.subscribe([arguments.topic], on_assign=on_assign, on_revoke=on_revoke)
    while not stopping:
        message = consumer.poll(0.1)
        if message is None:
            continue
        if message.error():
            say("E", message.error())
            continue
        say("P", message.partition(), message.offset())
        try:
            consumer.commit(message=message, asynchronous=False)
        except KafkaException as error:
            say("C", message.partition(), message.offset(), error.args[0].name())
    consumer.close()
    say("CLOSED")
    return 0


if __name__ == "__main__":
    sys.exit(main())
