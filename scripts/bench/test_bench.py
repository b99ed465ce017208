"""Unit tests of the results renderer, the stack summariser and the SVG charts.

Place in the flow: these check the pure parts of scripts/bench-peers' reporting (the goal
verdicts, the choice among repeated runs, the kernel-memory and CPU arithmetic, the perf
stack summary) on small synthetic inputs, without brokers or perf:

    python3 -m unittest discover -s scripts/bench -p 'test_*.py'
"""

import json
import os
import sys
import tempfile
import unittest
import xml.dom.minidom

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import render  # noqa: E402  (sibling modules, found through the path set just above)
import stacks  # noqa: E402
import svg  # noqa: E402


def message_report(delivered, p99_ns, rate_target=0, cpu=99.0, generator_bound=False):
    latency = {
        "count": 1,
        "min_ns": 1,
        "mean_ns": 1.0,
        "p50_ns": p99_ns // 2,
        "p90_ns": p99_ns,
        "p99_ns": p99_ns,
        "p999_ns": p99_ns,
        "max_ns": p99_ns,
    }
    return {
        "scenario": "pairs",
        "generator": {
            "threads": 1,
            "processes": 1,
            "cpu_seconds": 1.0,
            "wall_seconds": 1.0,
            "cpu_percent": 50.0,
            "max_process_cpu_percent": 95.0 if generator_bound else 50.0,
            "generator_bound": generator_bound,
        },
        "broker": {"cpu_percent": cpu, "cpu_ns_per_message": 1000.0},
        "messages": {
            "rate_target": rate_target,
            "delivered_per_sec": delivered,
            "sent_per_sec": delivered,
            "streams": {"lost": 0, "duplicates": 0},
            "latency": latency,
            "latency_from_write": latency,
            "send_lag": latency,
        },
        "warnings": [],
    }


def write_results(root, runs, meta=None):
    """runs: {(broker, stem): (report dict, others_percent or None)}."""
    with open(f"{root}/meta.tsv", "w", encoding="utf-8") as f:
        for k, v in (meta or {"brokers": "tidegate,mosquitto,rumqttd"}).items():
            f.write(f"{k}\t{v}\n")
    for (broker, stem), (rep, others) in runs.items():
        os.makedirs(f"{root}/{broker}", exist_ok=True)
        with open(f"{root}/{broker}/{stem}.json", "w", encoding="utf-8") as f:
            json.dump(rep, f)
        if others is not None:
            with open(f"{root}/{broker}/{stem}.contention", "w", encoding="utf-8") as f:
                f.write(f"others_percent\t{others}\n")


def slab_line(name, objs, size, slabs, pages_per_slab=1):
    return (
        f"{name} {objs} {objs} {size} 16 {pages_per_slab} : tunables 0 0 0 : "
        f"slabdata {slabs} {slabs} 0\n"
    )


class RunChoice(unittest.TestCase):
    def test_clean_run_beats_a_faster_contended_one(self):
        with tempfile.TemporaryDirectory() as root:
            write_results(
                root,
                {
                    ("tidegate", "pairs-q0-max"): (message_report(500_000, 10**6), 0),
                    ("tidegate", "pairs-q0-max.r2"): (message_report(600_000, 10**6), 40),
                    ("tidegate", "pairs-q0-max.r3"): (message_report(550_000, 10**6), 5),
                },
            )
            res = render.Results(root)
            self.assertEqual(render.delivered(res.get("tidegate", "pairs-q0-max")), 550_000)
            self.assertEqual(len(res.all_runs("tidegate", "pairs-q0-max")), 3)

    def test_fixed_rate_keeps_the_lowest_p99(self):
        a = message_report(100_000, 5_000_000, rate_target=100_000)
        b = message_report(100_000, 2_000_000, rate_target=100_000)
        self.assertIs(render.better_run(a, b), b)
        self.assertIs(render.better_run(b, a), b)


class Goals(unittest.TestCase):
    def test_throughput_goal_is_judged_on_the_ratio(self):
        with tempfile.TemporaryDirectory() as root:
            write_results(
                root,
                {
                    ("tidegate", "pairs-q0-max"): (message_report(149_000, 10**6), 0),
                    ("mosquitto", "pairs-q0-max"): (message_report(100_000, 10**6), 0),
                },
            )
            res = render.Results(root)
            g = render.throughput_goal(res, "pairs-q0-max", "t", "mosquitto", 1.5)
            self.assertEqual(g.verdict, "**NOT MET**")
            self.assertEqual(g.ratio_text, "1.49×")

    def test_missing_peer_is_not_measured(self):
        with tempfile.TemporaryDirectory() as root:
            write_results(root, {("tidegate", "fanin-q0-max"): (message_report(1, 1), 0)})
            res = render.Results(root)
            g = render.throughput_goal(res, "fanin-q0-max", "t", "mosquitto", 1.5)
            self.assertTrue(g.verdict.startswith("not measured"))

    def test_generator_bound_peer_is_noted(self):
        with tempfile.TemporaryDirectory() as root:
            write_results(
                root,
                {
                    ("tidegate", "pairs-q0-max"): (message_report(900_000, 10**6), 0),
                    ("mosquitto", "pairs-q0-max"): (
                        message_report(100_000, 10**6, cpu=60.0, generator_bound=True),
                        0,
                    ),
                },
            )
            res = render.Results(root)
            g = render.throughput_goal(res, "pairs-q0-max", "t", "mosquitto", 1.5)
            self.assertEqual(g.verdict, "**met**")
            self.assertIn("mosquitto: limited by generator", g.note)


class Arithmetic(unittest.TestCase):
    def test_limited_by(self):
        self.assertEqual(render.limited_by(message_report(1, 1, cpu=95.0), 0), "broker")
        shared = dict(message_report(1, 1, cpu=70.0), others_percent=25)
        self.assertIn("shared", render.limited_by(shared, 0))
        idle = message_report(1, 1, cpu=50.0)
        self.assertTrue(render.limited_by(idle, 0).startswith("neither"))

    def test_kernel_memory_counts_only_socket_caches(self):
        with tempfile.TemporaryDirectory() as d:
            head = "slabinfo - version: 2.1\n# name ...\n"
            with open(f"{d}/base.slab", "w", encoding="utf-8") as f:
                f.write(head + slab_line("TCP", 10, 2368, 10, 1))
                f.write(slab_line("buffer_head", 0, 104, 0))
            with open(f"{d}/base.sockstat", "w", encoding="utf-8") as f:
                f.write("TCP: inuse 5 orphan 0 tw 0 alloc 10 mem 0\n")
            # 1,000 new sockets: TCP grew by 1,000 objects in 250 more one-page slabs;
            # buffer_head (file writes elsewhere) grew too and must not count.
            with open(f"{d}/1.slab", "w", encoding="utf-8") as f:
                f.write(head + slab_line("TCP", 1010, 2368, 260, 1))
                f.write(slab_line("buffer_head", 50_000, 104, 1000))
            with open(f"{d}/1.sockstat", "w", encoding="utf-8") as f:
                f.write("TCP: inuse 1005 orphan 0 tw 0 alloc 1010 mem 0\n")
            m = render.kernel_memory(d)
            self.assertEqual(m["sockets"], 1000)
            self.assertAlmostEqual(m["per_socket"], 250 * 4096 / 1000)
            self.assertEqual([c[0] for c in m["caches"]], ["TCP"])

    def test_core_busy_counts_steal_as_busy(self):
        with tempfile.TemporaryDirectory() as d:
            with open(f"{d}/a", "w", encoding="utf-8") as f:
                f.write("cpu 0 0 0 0 0 0 0 0 0 0\ncpu0 100 0 0 100 0 0 0 0 0 0\n")
            with open(f"{d}/b", "w", encoding="utf-8") as f:
                # +50 user, +30 idle, +20 steal.
                f.write("cpu 0 0 0 0 0 0 0 0 0 0\ncpu0 150 0 0 130 0 0 0 20 0 0\n")
            self.assertEqual(render.core_busy(f"{d}/a", f"{d}/b"), {0: 70.0})


class Stacks(unittest.TestCase):
    SCRIPT = """tokio-rt-worker
\t  16d80f __memmove_avx512_unaligned_erms+0x1f (/usr/lib/libc.so.6)
\t  5aca22 tidegate_server::outbox::Outbox::push (/t/tidegate)
\t  5429d7 tidegate_server::engine::run::{{closure}} (/t/tidegate)

tokio-rt-worker
\t  ffff01 tcp_sendmsg ([kernel.kallsyms])
\t  ffff02 __x64_sys_sendto ([kernel.kallsyms])
\t  5aca99 tidegate_server::connection::poll_write_side (/t/tidegate)

tokio-rt-worker
\t  5aca22 tidegate_server::outbox::Outbox::push (/t/tidegate)
\t  5429d7 tidegate_server::engine::run::{{closure}} (/t/tidegate)
"""

    def test_inclusive_and_callers(self):
        out = stacks.summarise(self.SCRIPT.splitlines(keepends=True))
        self.assertEqual(out["samples"], 3)
        inclusive = {r["function"]: r["percent"] for r in out["inclusive"]}
        self.assertAlmostEqual(inclusive["tidegate_server::engine::run"], 66.67)
        self.assertAlmostEqual(inclusive["tidegate_server::outbox::Outbox::push"], 66.67)
        callers = {(r["kind"], r["caller"]): r["percent"] for r in out["hot_callers"]}
        self.assertAlmostEqual(
            callers[("memcpy/memmove", "tidegate_server::outbox::Outbox::push")], 33.33
        )
        self.assertAlmostEqual(
            callers[("kernel: sendto", "tidegate_server::connection::poll_write_side")], 33.33
        )


class Charts(unittest.TestCase):
    def test_charts_are_well_formed_xml(self):
        bars = svg.grouped_bars(
            "t", "ms", ["p50", "p99"], [("tidegate", [1.0, None]), ("x", [2.0, 30.0])], log=True
        )
        line = svg.lines("t", "x", "y", [("tidegate", [(1000, 5.0), (19000, 50.0)])])
        for doc in (bars, line):
            xml.dom.minidom.parseString(doc)
        self.assertIn("n/a", bars)


if __name__ == "__main__":
    unittest.main()
