"""A small scenario runner shared by the Python clients' compatibility scripts.

A scenario is a function registered with `@scenario(...)`. It talks to the broker named by `--bootstrap` and proves
something with asserts. Markers:
- `basic=True`: part of the fast set that CI runs (`--fast`).
- `pending="issue N"`: waits for a feature Sluice has not built yet. Run only by the full set; a failure is
  reported as skipped with its first error line, a pass is reported as passed with a note to delete the marker.
  Deleting the marker is all it takes to make the scenario required.
- `unsupported="transactions"`: a feature Sluice does not plan; never run, reported as skipped.

Every scenario runs under SIGALRM with `--scenario-timeout` seconds, so a client stuck in a retry loop fails that
scenario instead of hanging the run. The last line printed is `SUITE: N passed, N failed, N skipped`; the exit
status is 1 if any required scenario failed.
"""

import argparse
import asyncio
import inspect
import os
import signal
import sys
import time
import traceback
import uuid

SCENARIOS = []


class ScenarioTimeout(Exception):
    pass


def scenario(name, basic=False, pending=None, unsupported=None):
    def register(function):
        SCENARIOS.append({"name": name, "function": function, "basic": basic, "pending": pending,
                          "unsupported": unsupported})
        return function
    return register


def unique_topic(prefix):
    """A topic name no earlier run or scenario used, so scenarios never see each other's records."""
    return f"compat-{prefix}-{uuid.uuid4().hex[:10]}"


def wait_until(predicate, timeout_s, what, interval_s=0.1):
    """Polls `predicate` until it returns something true; fails naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what} (last: {last!r})")


def _alarm(_signal_number, _frame):
    raise ScenarioTimeout("scenario timed out")


def _first_line(error):
    text = f"{type(error).__name__}: {error}".strip()
    return text.splitlines()[0][:300] if text else type(error).__name__


def main(suite):
    parser = argparse.ArgumentParser(description=f"{suite} compatibility scenarios")
    parser.add_argument("--bootstrap", default=os.environ.get("SLUICE_BOOTSTRAP", "127.0.0.1:9092"))
    parser.add_argument("--fast", action="store_true", help="only the basic scenarios")
    parser.add_argument("--scenario-timeout", type=int, default=90)
    parser.add_argument("--only", help="run only scenarios whose name contains this")
    arguments = parser.parse_args()

    signal.signal(signal.SIGALRM, _alarm)
    passed = failed = skipped = 0
    for entry in SCENARIOS:
        name = entry["name"]
        if arguments.only and arguments.only not in name:
            continue
        if arguments.fast and not entry["basic"]:
            continue
        if entry["unsupported"]:
            print(f"SKIP {suite} {name}: not supported: {entry['unsupported']}", flush=True)
            skipped += 1
            continue
        if entry["pending"] and arguments.fast:
            print(f"SKIP {suite} {name}: pending {entry['pending']}", flush=True)
            skipped += 1
            continue
        started = time.monotonic()
        # Pending scenarios are expected to fail, often by waiting out a client timeout: bound them tighter.
        timeout_s = min(arguments.scenario_timeout, 45) if entry["pending"] else arguments.scenario_timeout
        signal.alarm(timeout_s)
        error = None
        try:
            result = entry["function"](arguments.bootstrap)
            if inspect.iscoroutine(result):
                asyncio.run(result)
        except BaseException as caught:  # noqa: BLE001 - a scenario's failure of any kind is reported, not raised
            if isinstance(caught, KeyboardInterrupt):
                raise
            error = caught
        finally:
            signal.alarm(0)
        elapsed = time.monotonic() - started
        if error is None:
            passed += 1
            note = f" (marked pending {entry['pending']} but passes: delete the marker)" if entry["pending"] else ""
            print(f"PASS {suite} {name} ({elapsed:.2f} s){note}", flush=True)
        elif entry["pending"]:
            skipped += 1
            print(f"SKIP {suite} {name}: pending {entry['pending']} ({_first_line(error)})", flush=True)
        else:
            failed += 1
            print(f"FAIL {suite} {name} ({elapsed:.2f} s): {_first_line(error)}", flush=True)
            traceback.print_exception(error, file=sys.stdout)
    print(f"{suite}: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    # Client threads (librdkafka's, aiokafka's) must not keep a finished run alive.
    sys.stdout.flush()
    os._exit(1 if failed else 0)
