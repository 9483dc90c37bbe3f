"""Runs librdkafka's own test suite (tests/test-runner) against a running broker and judges it.

Why not one `run-test.sh` for the whole suite: the runner aborts the process on the first test that times out
(check_test_timeouts), before later tests run and before it prints a summary. So every test number runs in its own
`test-runner -Q -E -L -r` process (quick mode, no socket emulation, broker tests only, JSON report), in its own
working directory so that the reports of parallel processes cannot collide, under `timeout`. The JSON report gives
each test's state; the log gives a failure's reason (the runner's `### Test "..." failed at ...` block).

Each failure is then looked up in the known-failures files (compat/known-failures.txt; in a cluster run also
compat/known-failures-cluster.txt). Output: one line per failed or not-run test, then
`SUITE: N passed, N failed, N skipped`. Exit status 1 if a failure is on no list.
"""

import argparse
import concurrent.futures
import glob
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from known_failures import load_known_failures, lookup  # noqa: E402


def test_names(tests_dir):
    """Every test in test.c's table, in order: `_TEST(0011_produce_batch, flags, ...)` -> [(name, flags)].

    The runner skips TEST_F_MANUAL tests only when no TESTS list is given; this script always gives one, so it
    must leave them out itself.
    """
    source = (Path(tests_dir) / "test.c").read_text(errors="replace")
    return re.findall(r"^\s*_TEST\((\d{4}_\w+),\s*([^,)]*)", source, flags=re.MULTILINE)


def failure_reason(log_text, name):
    """The runner's own words on why `name` failed: the block after `### Test "name" failed at ...`."""
    match = re.search(r'### Test "%s( \(([^)]*)\))?" failed at [^\n]*\n([^\n]*)' % re.escape(name), log_text)
    if match:
        where = f"{match.group(2)}: " if match.group(2) else ""
        return where + match.group(3).strip()
    # A failure recorded without the abort block: the last assertion line of that test.
    lines = [line for line in log_text.splitlines() if name in line and ("FAIL" in line or "assert" in line)]
    return re.sub(r"\x1b\[[0-9;]*m", "", lines[-1]).strip() if lines else "no reason printed"


def run_number(number, names, arguments, work_root):
    """Runs every test of one number in one test-runner process; returns [(name, state, reason)]."""
    work_dir = work_root / number
    work_dir.mkdir(parents=True, exist_ok=True)
    for stale in glob.glob(str(work_dir / "test_report_*.json")):
        os.remove(stale)
    tests_dir = Path(arguments.tests_dir).resolve()
    library_path = f"{tests_dir.parent / 'src'}:{tests_dir.parent / 'src-cpp'}"
    environment = dict(os.environ, TESTS=number, TEST_KAFKA_VERSION=arguments.kafka_version,
                       RDKAFKA_TEST_CONF=str(Path(arguments.test_conf).resolve()), LD_LIBRARY_PATH=library_path,
                       RDKAFKA_GITVER="2.15.1")
    command = ["timeout", "-k", "10", str(arguments.test_timeout), str(tests_dir / "test-runner"), "-Q", "-E", "-L",
               "-r"]
    started = time.monotonic()
    with open(work_dir / "test.log", "wb") as log:
        code = subprocess.run(command, cwd=work_dir, env=environment, stdout=log, stderr=subprocess.STDOUT).returncode
    elapsed = time.monotonic() - started
    log_text = (work_dir / "test.log").read_text(errors="replace")
    reports = sorted(glob.glob(str(work_dir / "test_report_*.json")))
    states = {}
    if reports:
        with open(reports[-1]) as report:
            tests = json.load(report).get("tests", {})
        states = {name: entry.get("state", "?") for name, entry in tests.items() if name in names}
    results = []
    for name in names:
        state = states.get(name)
        if state is None:
            if code == 124 or code == 137:
                reason = f"killed by timeout after {elapsed:.0f} s (no report)"
            else:
                reason = f"test-runner exited {code} without a report entry"
            results.append((name, "FAILED", reason))
        elif state == "FAILED":
            results.append((name, "FAILED", failure_reason(log_text, name)))
        elif state in ("PASSED", "SKIPPED"):
            results.append((name, state, ""))
        else:  # RUNNING or NOT_STARTED when another test of the same number aborted the process
            results.append((name, "FAILED", f"left in state {state}: {failure_reason(log_text, name)}"))
    return results


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tests-dir", required=True, help="librdkafka's tests/ with test-runner built")
    parser.add_argument("--test-conf", required=True, help="test.conf with metadata.broker.list")
    parser.add_argument("--kafka-version", required=True)
    parser.add_argument("--work-dir", required=True)
    parser.add_argument("--known-failures", required=True, action="append",
                        help="a known-failures file; given more than once, a test is looked up in each in turn")
    parser.add_argument("--suite", default="librdkafka")
    parser.add_argument("--tests", default="", help="space-separated test numbers (default: every test)")
    parser.add_argument("--parallel", type=int, default=2)
    parser.add_argument("--test-timeout", type=int, default=300, help="seconds per test number")
    arguments = parser.parse_args()

    known = {}
    for path in reversed(arguments.known_failures):  # the first file that lists a test wins
        known.update({test: dict(entry, path=path)
                      for test, entry in load_known_failures(path, arguments.suite).items()})
    by_number = {}
    manual = set()
    for name, flags in test_names(arguments.tests_dir):
        if "TEST_F_MANUAL" in flags:
            manual.add(name[:4])
        else:
            by_number.setdefault(name[:4], []).append(name)
    # A number whose every test is manual (8000_idle, ...) is not part of the suite's own full run either.
    for number in manual:
        if number not in by_number:
            by_number[number] = []
    wanted = arguments.tests.split() or [number for number in by_number if by_number[number]]
    unknown = [number for number in wanted if number not in by_number]
    assert len(unknown) < len(wanted), f"none of the tests {wanted} is in {arguments.tests_dir}/test.c"
    for number in unknown:  # e.g. 0087, in issue 5's smoke set but not in librdkafka 2.15.1
        print(f"NOTE {arguments.suite}: there is no test {number} in this version of the suite")
    wanted = [number for number in wanted if number in by_number]

    results = []
    runnable = []
    for number in wanted:
        entry = lookup(known, number)
        if entry is not None and entry["reason"].startswith("not runnable here"):
            results.extend((name, "NOT RUN", entry) for name in by_number[number])
        else:
            runnable.append(number)

    work_root = Path(arguments.work_dir)
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(max_workers=arguments.parallel) as pool:
        futures = {pool.submit(run_number, number, by_number[number], arguments, work_root): number
                   for number in runnable}
        for done_count, future in enumerate(concurrent.futures.as_completed(futures), 1):
            number = futures[future]
            number_results = future.result()
            results.extend(number_results)
            summary = ", ".join(f"{name[5:]} {state}" for name, state, _ in number_results if state != "SKIPPED")
            print(f"  [{done_count}/{len(runnable)} {time.monotonic() - started:5.0f} s] {number}: "
                  f"{summary or 'skipped'}", flush=True)

    passed = failed = skipped = 0
    unexpected = 0
    for name, state, detail in sorted(results):
        if state == "PASSED":
            passed += 1
            entry = lookup(known, name)
            if entry is not None:
                print(f"NOTE {arguments.suite} {name} passes but is on the known-failures list ({entry['waits_for']}):"
                      f" remove it from {entry['path']}")
        elif state == "SKIPPED":
            skipped += 1
        elif state == "NOT RUN":
            skipped += 1
            print(f"SKIP {arguments.suite} {name}: {detail['reason']} ({detail['waits_for']})")
        else:
            failed += 1
            entry = lookup(known, name)
            if entry is None:
                unexpected += 1
                print(f"FAIL {arguments.suite} {name}: NOT on the known-failures list: {detail}")
            else:
                print(f"FAIL {arguments.suite} {name} (known, {entry['waits_for']}: {entry['reason']}): {detail}")
    print(f"logs: {work_root}/<test number>/test.log")
    print(f"{arguments.suite}: {passed} passed, {failed} failed, {skipped} skipped", flush=True)
    sys.exit(1 if unexpected else 0)


if __name__ == "__main__":
    main()
