#!/usr/bin/env python3
"""Summarises `perf script` call stacks of the profiled broker into JSON.

Place in the flow: scripts/bench-peers records Tidegate with `perf record --call-graph dwarf`
(Rust release builds keep no frame pointers, so DWARF unwinding is what names the callers),
pipes `perf script -F comm,ip,sym,dso` through this script and keeps the JSON beside the raw
profile; render.py turns it into the profile tables of docs/benchmarks.md.

Two views, both in percent of all samples:
- "inclusive": time spent in (or under) each Tidegate function, inlined frames included, each
  function counted once per sample. This says which stage of the pipeline costs what.
- "hot_callers": for samples whose leaf is a shared helper (memcpy, hashing, Bytes reference
  counts, allocation, string search, the kernel), the nearest Tidegate frame above it, and for
  kernel samples the system call. This says who to fix, not just what is hot.

    perf script -i perf.data -F comm,ip,sym,dso | python3 stacks.py > stacks.json
"""

import json
import re
import sys

CLOSURE = re.compile(r"(::\{\{closure\}\})+")
FRAME = re.compile(r"^\s+[0-9a-f]+\s+(?P<sym>.*?)(?:\s+\((?P<where>[^()]*)\))?\s*$")
SYSCALL = re.compile(r"^__(?:x64|do)_sys_(\w+)$")

HELPERS = [
    ("memcpy/memmove", re.compile(r"mem(cpy|move)")),
    ("memcmp/char search", re.compile(r"memcmp|memchr|CharSearcher|str::pattern")),
    ("hashing", re.compile(r"hash_one|sip::Hasher|Hasher>::write|hashbrown")),
    ("Bytes refcount", re.compile(r"bytes::bytes(_mut)?::\w*(shared|promotable)")),
    (
        "allocation",
        re.compile(r"malloc|_int_free|cfree|realloc|unlink_chunk|__rust_(de)?alloc|raw_vec"),
    ),
]


def clean(sym):
    """Function name without closure suffixes and perf's '+0x..' offsets."""
    sym = re.sub(r"\+0x[0-9a-f]+$", "", sym)
    return CLOSURE.sub("", sym)


def own_frame(sym):
    return sym.startswith(("tidegate_", "<tidegate_"))


def summarise(lines):
    samples = []
    current = None
    for line in lines:
        if not line.strip():
            continue
        if not line[0].isspace():
            current = []
            samples.append(current)
            continue
        m = FRAME.match(line)
        if m is None or current is None:
            continue
        where = m.group("where") or ""
        current.append((clean(m.group("sym")), "kernel" if "kernel" in where else where))
    total = len(samples)
    if total == 0:
        return {"samples": 0, "inclusive": [], "hot_callers": []}

    inclusive = {}
    callers = {}
    for frames in samples:
        seen = set()
        for sym, _ in frames:
            if own_frame(sym) and sym not in seen:
                seen.add(sym)
                inclusive[sym] = inclusive.get(sym, 0) + 1
        if not frames:
            continue
        leaf, leaf_where = frames[0]
        if own_frame(leaf):
            continue
        if leaf_where == "kernel":
            syscall = next(
                (SYSCALL.match(s).group(1) for s, w in frames if w == "kernel" and SYSCALL.match(s)),
                "no syscall (softirq, page fault, scheduler)",
            )
            kind = f"kernel: {syscall}"
        else:
            kind = next((name for name, rx in HELPERS if rx.search(leaf)), None)
            if kind is None:
                continue
        caller = next((s for s, _ in frames if own_frame(s)), "(no Tidegate frame)")
        key = (kind, caller)
        callers[key] = callers.get(key, 0) + 1

    def pct(n):
        return round(100.0 * n / total, 2)

    return {
        "samples": total,
        "inclusive": [
            {"function": f, "percent": pct(n)}
            for f, n in sorted(inclusive.items(), key=lambda kv: -kv[1])
            if pct(n) >= 0.5
        ],
        "hot_callers": [
            {"kind": k, "caller": c, "percent": pct(n)}
            for (k, c), n in sorted(callers.items(), key=lambda kv: -kv[1])
            if pct(n) >= 0.3
        ],
    }


def main():
    json.dump(summarise(sys.stdin), sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
