"""Reads compat/known-failures.txt: one failure a line, `SUITE TEST | reason | what it waits for`.

TEST is a test's full name (`0030_offset_commit`) or a librdkafka test number (`0045`), which covers every test of
that number. A reason starting with "not runnable here" means the test is not run at all. Blank lines and lines
starting with # are comments. A malformed line stops the run: a list nobody can read protects nothing.
"""


def load_known_failures(path, suite):
    entries = {}
    with open(path) as known:
        for line_number, line in enumerate(known, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            fields = [field.strip() for field in line.split("|")]
            head = fields[0].split()
            if len(fields) != 3 or len(head) != 2 or not fields[1] or not fields[2]:
                raise SystemExit(f"{path}:{line_number}: want `SUITE TEST | reason | waits for`, got {line!r}")
            if head[0] != suite:
                continue
            entries[head[1]] = {"reason": fields[1], "waits_for": fields[2], "line": line_number}
    return entries


def lookup(entries, name):
    """The entry for test `name`, by full name or by its four-digit number."""
    return entries.get(name) or entries.get(name[:4])
