#!/usr/bin/env python3
"""Code-shape figures the architecture issue asks for, from the source alone (no build):

- the module graph of the broker crate (an edge A -> B when a file of module A names `crate::B`), and its cycles;
- functions longer than 70 lines, per crate;
- assertions (`assert!`, `assert_eq!`, `assert_ne!`, `debug_assert*`) per 1,000 non-test lines, per crate.

Usage: scripts/code_stats.py [--graph]
"""
import os
import re
import sys

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..")
CRATES = ["storage", "replication", "broker", "bench"]
FUNCTION_LINES_MAX = 70


def source_files(crate):
    base = os.path.join(ROOT, crate, "src")
    for directory, _, names in os.walk(base):
        for name in sorted(names):
            if name.endswith(".rs"):
                yield os.path.join(directory, name)


def strip_tests(text):
    """The part of a file before its `#[cfg(test)]` module (tests are at the end of files in this codebase)."""
    marker = text.find("#[cfg(test)]")
    return text if marker < 0 else text[:marker]


def module_of(crate, path):
    relative = os.path.relpath(path, os.path.join(ROOT, crate, "src"))[:-3]
    parts = relative.split(os.sep)
    if parts[-1] == "mod":
        parts = parts[:-1]
    return "::".join(parts) if parts else "crate"


def long_functions(text):
    """(name, length) of each fn whose body spans more than FUNCTION_LINES_MAX lines (brace matching per line)."""
    lines = text.split("\n")
    found = []
    index = 0
    while index < len(lines):
        match = re.match(r"\s*(pub(\([^)]*\))?\s+)?(async\s+)?(const\s+)?(unsafe\s+)?fn\s+(\w+)", lines[index])
        if not match or lines[index].strip().startswith("//"):
            index += 1
            continue
        depth = 0
        opened = False
        end = index
        while end < len(lines):
            code = re.sub(r"//.*", "", lines[end])
            code = re.sub(r"'(\\.|[^'\\])'", "", code)
            code = re.sub(r'"(\\.|[^"\\])*"', "", code)
            depth += code.count("{") - code.count("}")
            if "{" in code:
                opened = True
            if opened and depth <= 0:
                break
            if not opened and code.rstrip().endswith(";"):
                break
            end += 1
        length = end - index + 1
        if opened and length > FUNCTION_LINES_MAX:
            found.append((match.group(6), length))
        index += 1
    return found


def main():
    show_graph = "--graph" in sys.argv
    for crate in CRATES:
        code_lines = 0
        assertions = 0
        longs = []
        for path in source_files(crate):
            with open(path, encoding="utf-8") as handle:
                text = strip_tests(handle.read())
            code_lines += sum(1 for line in text.split("\n") if line.strip() and not line.strip().startswith("//"))
            assertions += len(re.findall(r"\b(debug_)?assert(_eq|_ne)?!", text))
            for name, length in long_functions(text):
                longs.append((length, f"{os.path.relpath(path, ROOT)}::{name}"))
        per_thousand = 1000 * assertions / code_lines if code_lines else 0
        print(f"{crate}: {code_lines} lines, {assertions} assertions ({per_thousand:.1f} per 1,000 lines), "
              f"{len(longs)} functions over {FUNCTION_LINES_MAX} lines")
        for length, name in sorted(longs, reverse=True):
            print(f"    {length:5d}  {name}")

    edges = {}
    for path in source_files("broker"):
        module = module_of("broker", path)
        top = module.split("::")[0]
        with open(path, encoding="utf-8") as handle:
            text = strip_tests(handle.read())
        # Doc comments name modules too (`[crate::server]`); only code counts as an import.
        text = "\n".join(re.sub(r"//.*", "", line) for line in text.split("\n"))
        for target in re.findall(r"crate::(\w+)", text):
            target_top = target
            if target_top != top and os.path.exists(os.path.join(ROOT, "broker", "src", target_top)) or \
                    os.path.exists(os.path.join(ROOT, "broker", "src", target_top + ".rs")):
                if target_top != top:
                    edges.setdefault(top, set()).add(target_top)
    if show_graph:
        print("\nbroker module graph (top-level modules):")
        for module in sorted(edges):
            print(f"    {module} -> {', '.join(sorted(edges[module]))}")
    cycles = find_cycles(edges)
    print(f"\nbroker import cycles between top-level modules: {len(cycles)}")
    for cycle in cycles[:10]:
        print("    " + " -> ".join(cycle))
    tangled = sorted({module for cycle in cycles for module in cycle})
    print(f"modules on some cycle: {', '.join(tangled) if tangled else 'none'}")


def find_cycles(edges):
    """Every elementary cycle's node set once (small graphs: a DFS from each node is enough)."""
    seen = set()
    cycles = []
    def visit(start, node, path):
        for target in sorted(edges.get(node, ())):
            if target == start:
                key = frozenset(path)
                if key not in seen:
                    seen.add(key)
                    cycles.append(path + [start])
            elif target not in path and target > start:
                visit(start, target, path + [target])
    for start in sorted(edges):
        visit(start, start, [start])
    return cycles


if __name__ == "__main__":
    main()
