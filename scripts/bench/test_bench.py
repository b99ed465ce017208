"""Unit tests of the results renderer (and its HTTP and Fairness sections), the stack summariser and the SVG charts.

Place in the flow: these check the pure parts of scripts/bench-peers' reporting (the goal
verdicts, the choice among repeated runs, the kernel-memory and CPU arithmetic, the perf
stack summary) on small synthetic inputs, without brokers or perf:

    python3 -m unittest discover -s scripts/bench -p 'test_*.py'
"""

import contextlib
import io
import json
import os
import sys
import tempfile
import unittest
import xml.dom.minidom

sys.dont_write_bytecode = True
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import fairness  # noqa: E402  (sibling modules, found through the path set just above)
import render  # noqa: E402
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


def http_report(delivered, p99_ns, mode=None, qos=1, rate_target=0, lost=0, failed=0,
                generator_bound=False):
    """A report as `tidegate-bench http` (mode given) or pairs/fanout (mode None) writes it."""
    rep = message_report(delivered, p99_ns, rate_target=rate_target, generator_bound=generator_bound)
    rep["messages"].update(
        qos=qos, publishers=16, subscribers=16, window=16, unacked=0, errors=[]
    )
    rep["messages"]["streams"]["lost"] = lost
    if mode is not None:
        rep["scenario"] = "http"
        rep["http"] = {
            "mode": mode,
            "connections": 16,
            "messages_per_request": 50 if mode == "batch" else 1,
            "requests_per_sec": delivered / (50 if mode == "batch" else 1),
            "failed_requests": failed,
            "failed_statuses": [[503, failed]] if failed else [],
            "unanswered": 0,
            "request_latency": rep["messages"]["latency"],
            "sse_bad_events": 0,
        }
    return rep


def write_http_results(root, runs, meta=None):
    """runs: {file stem: report}."""
    with open(f"{root}/meta.tsv", "w", encoding="utf-8") as f:
        for k, v in (meta or {"repeat": "2", "rate": "2000", "streams": "100"}).items():
            f.write(f"{k}\t{v}\n")
    with open(f"{root}/commands.tsv", "w", encoding="utf-8") as f:
        f.write("mqtt-q0-max\ttaskset -c 1 tidegate-bench pairs -n 16\n")
        f.write("mqtt-q0-max\ttaskset -c 1 tidegate-bench pairs -n 16\n")
    for stem, rep in runs.items():
        with open(f"{root}/{stem}.json", "w", encoding="utf-8") as f:
            json.dump(rep, f)


def table_row(section, start):
    return next(line for line in section.splitlines() if line.startswith(start))


class HttpSection(unittest.TestCase):
    def test_ratios_best_rounds_and_flags(self):
        with tempfile.TemporaryDirectory() as root:
            write_http_results(
                root,
                {
                    "mqtt-q0-max.r1": http_report(90_000, 10**6, qos=0),
                    "mqtt-q0-max.r2": http_report(100_000, 10**6, qos=0),
                    "http-q0-max.r1": http_report(25_000, 10**6, mode="publish", qos=0),
                    "batch-q0-max.r1": http_report(
                        150_000, 10**6, mode="batch", qos=0, generator_bound=True
                    ),
                    "mqtt-q1-max.r1": http_report(50_000, 10**6),
                    "http-q1-max.r1": http_report(10_000, 10**6, mode="publish", failed=2),
                    "http-q1-rate": http_report(2_000, 3 * 10**6, mode="publish", rate_target=2_000),
                    "fan-mqtt-max.r1": http_report(400_000, 10**6, qos=0, lost=7),
                    "fan-sse-max.r1": http_report(100_000, 10**6, mode="sse", qos=0),
                },
            )
            section = render.http_section(root)
        self.assertTrue(section.startswith("<!-- http:begin -->\n## HTTP"))
        self.assertTrue(section.endswith("<!-- http:end -->"))
        # The best of the two MQTT rounds is the baseline: HTTP single = 25%, batch = 150%.
        q0 = section[section.index("### Publish, QoS 0") :]
        self.assertIn("| 100,000 |", table_row(q0, "| MQTT `pairs`"))
        self.assertIn("| 25% |", table_row(q0, "| HTTP `POST /v1/publish`,"))
        batch = table_row(q0, "| HTTP `POST /v1/publish/batch`")
        self.assertIn("| 150% |", batch)
        self.assertIn("50 msg/request", batch)
        self.assertIn("**GENERATOR-BOUND**", batch)
        q1 = section[section.index("### Publish, QoS 1, closed") :]
        self.assertIn("**failed requests 2 (2× 503)**", table_row(q1, "| HTTP `POST /v1/publish`,"))
        self.assertIn("run failed", table_row(q1, "| HTTP `POST /v1/publish/batch`"))
        fixed = section[section.index("### Publish, QoS 1, fixed 2000 msg/s") :]
        self.assertIn("| 3.00 ms |", table_row(fixed, "| HTTP `POST /v1/publish`,"))
        fan = section[section.index("### Fan-out to 100 subscribers") :]
        self.assertIn("| 25% |", table_row(fan, "| SSE `GET /v1/subscribe`, 16 | closed loop"))
        # QoS 0 loss is reported, not flagged as a failure.
        self.assertIn("| lost 7 (QoS 0) |", table_row(fan, "| MQTT `fanout`, 16 | closed loop"))
        self.assertIn("run failed", table_row(fan, "| SSE `GET /v1/subscribe` | fixed rate"))

    def test_no_ratio_without_the_mqtt_baseline(self):
        with tempfile.TemporaryDirectory() as root:
            write_http_results(
                root,
                {
                    "http-q0-max.r1": http_report(25_000, 10**6, mode="publish", qos=0),
                    "fan-sse-max.r1": http_report(100_000, 10**6, mode="sse", qos=0),
                },
            )
            section = render.http_section(root)
        self.assertIn("| 25,000 | 25,000 | – |", table_row(section, "| HTTP `POST /v1/publish`,"))
        self.assertIn("| 100,000 | – |", table_row(section, "| SSE `GET /v1/subscribe`, 16"))
        self.assertIn("tidegate-bench pairs -n 16", section)
        self.assertEqual(section.count("tidegate-bench pairs -n 16"), 1)

    def test_busy_machine_is_called_out(self):
        with tempfile.TemporaryDirectory() as root:
            write_http_results(root, {}, meta={"loadavg_start": "2.50 1.00 0.50", "loadavg_end": "0.3 0 0"})
            section = render.http_section(root)
            self.assertIn("The machine was busy (1-minute load up to 2.50)", section)
            self.assertIn("in release builds", section)
            write_http_results(root, {}, meta={"profile": "debug", "quick": "1"})
            section = render.http_section(root)
            self.assertIn("**DEBUG BUILD**", section)
            self.assertIn("**QUICK RUN**", section)

    def test_marked_block_is_replaced_in_place_or_appended(self):
        with tempfile.TemporaryDirectory() as d:
            path = f"{d}/benchmarks.md"
            with open(path, "w", encoding="utf-8") as f:
                f.write("# Top\n\n<!-- http:begin -->\nold\n<!-- http:end -->\n\n"
                        "<!-- storage:begin -->\nS\n<!-- storage:end -->\n")
            render.replace_marked(path, "http", "<!-- http:begin -->\nnew\n<!-- http:end -->")
            with open(path, encoding="utf-8") as f:
                text = f.read()
            self.assertEqual(
                text,
                "# Top\n\n<!-- http:begin -->\nnew\n<!-- http:end -->\n\n"
                "<!-- storage:begin -->\nS\n<!-- storage:end -->\n",
            )
            # The peers' render keeps it with the other scripts' sections.
            self.assertEqual(len(render.kept_sections(path)), 2)
            fresh = f"{d}/fresh.md"
            with open(fresh, "w", encoding="utf-8") as f:
                f.write("# Top\n")
            render.replace_marked(fresh, "http", "<!-- http:begin -->\nx\n<!-- http:end -->")
            with open(fresh, encoding="utf-8") as f:
                self.assertEqual(f.read(), "# Top\n\n<!-- http:begin -->\nx\n<!-- http:end -->\n")

    def test_command_line_writes_into_the_file(self):
        with tempfile.TemporaryDirectory() as root:
            write_http_results(root, {"mqtt-q1-rate": http_report(2_000, 10**6, rate_target=2_000)})
            out = f"{root}/benchmarks.md"
            self.assertEqual(render.main(["render.py", "--http", root, out]), 0)
            with open(out, encoding="utf-8") as f:
                text = f.read()
            self.assertIn("### Publish, QoS 1, fixed 2000 msg/s", text)
            with contextlib.redirect_stderr(io.StringIO()) as err:
                self.assertEqual(render.main(["render.py", "--http"]), 2)
            self.assertIn("usage", err.getvalue())


def fairness_report(p99_ns, delivered=2_000, window=(1_000, 6_000), qos=1, lost=0,
                    generator_bound=False):
    """A pairs report as tidegate-bench writes it, with its measured wall-clock window."""
    rep = message_report(delivered, p99_ns, rate_target=2_000, generator_bound=generator_bound)
    rep["messages"].update(
        qos=qos, unacked=0, errors=[],
        measured_from_unix_ms=window[0], measured_until_unix_ms=window[1],
    )
    rep["messages"]["streams"]["lost"] = lost
    return rep


def write_fairness_results(root, runs, meta=None):
    """runs: {file stem: report}; a /proc/stat pair and a load average for every quiet run."""
    with open(f"{root}/meta.tsv", "w", encoding="utf-8") as f:
        for k, v in (meta or {"rate": "2000", "noisy_pairs": "8", "generator_cpu": "1",
                              "repeat": "2"}).items():
            f.write(f"{k}\t{v}\n")
    with open(f"{root}/commands.tsv", "w", encoding="utf-8") as f:
        f.write("noisy-q1-flood0\tnoisy\ttaskset -c 1 nice -n 19 tidegate-bench pairs -n 8\n")
        f.write("quiet-q1-flood0\tquiet\ttaskset -c 1 tidegate-bench pairs -n 10\n")
        f.write("noisy-q1-flood0\tnoisy\ttaskset -c 1 nice -n 19 tidegate-bench pairs -n 8\n")
    with open(f"{root}/runs.tsv", "w", encoding="utf-8") as f:
        for stem, rep in runs.items():
            if stem.startswith("quiet-"):
                f.write(f"{stem}\t0.50 0.40 0.30\n")
    for stem, rep in runs.items():
        with open(f"{root}/{stem}.json", "w", encoding="utf-8") as f:
            json.dump(rep, f)
        if stem.startswith("quiet-"):
            with open(f"{root}/{stem}.stat0", "w", encoding="utf-8") as f:
                f.write("cpu 0 0 0 0 0 0 0 0\ncpu0 0 0 0 100 0 0 0 0\ncpu1 0 0 0 100 0 0 0 0\n")
            with open(f"{root}/{stem}.stat1", "w", encoding="utf-8") as f:
                # Core 1: +60 user, +40 idle.
                f.write("cpu 0 0 0 0 0 0 0 0\ncpu0 90 0 0 110 0 0 0 0\ncpu1 60 0 0 140 0 0 0 0\n")


NOISY_WINDOW = (500, 7_000)


class FairnessSection(unittest.TestCase):
    def runs(self):
        ms = 1_000_000
        return {
            # Round 1: idle 1 ms; flooded at QoS 0: 1.5 ms (1.5×), at QoS 1: 3 ms (3×).
            "quiet-q1-idle.r1": fairness_report(1 * ms),
            "quiet-q1-flood0.r1": fairness_report(3 * ms // 2),
            "noisy-q1-flood0.r1": fairness_report(9 * ms, 80_000, NOISY_WINDOW, qos=0),
            "quiet-q1-flood1.r1": fairness_report(3 * ms),
            "noisy-q1-flood1.r1": fairness_report(9 * ms, 40_000, NOISY_WINDOW,
                                                  generator_bound=True),
            # Round 2: idle 2 ms; QoS 0 flood 2.2 ms (1.1×); the QoS 1 flood ended before the
            # quiet window did, so its 10× does not count.
            "quiet-q1-idle.r2": fairness_report(2 * ms),
            "quiet-q1-flood0.r2": fairness_report(22 * ms // 10),
            "noisy-q1-flood0.r2": fairness_report(9 * ms, 100_000, NOISY_WINDOW, qos=0),
            "quiet-q1-flood1.r2": fairness_report(20 * ms),
            "noisy-q1-flood1.r2": fairness_report(9 * ms, 40_000, (500, 5_000)),
            # Quiet QoS 0: idle only in round 1, its flooded run lost messages.
            "quiet-q0-idle.r1": fairness_report(1 * ms, qos=0),
            "quiet-q0-flood0.r1": fairness_report(5 * ms, qos=0, lost=3),
            "noisy-q0-flood0.r1": fairness_report(9 * ms, 90_000, NOISY_WINDOW, qos=0),
        }

    def test_ratios_medians_and_verdicts(self):
        with tempfile.TemporaryDirectory() as root:
            write_fairness_results(root, self.runs())
            rows = fairness.collect(root, 1)
            vs = {(v["qos"], v["flood"]): v for v in fairness.verdicts(rows)}
        q1f0 = vs[(1, 0)]
        self.assertEqual([round(x, 2) for x in q1f0["ratios"]], [1.5, 1.1])
        self.assertAlmostEqual(q1f0["median"], 1.3)
        self.assertEqual(q1f0["verdict"], "met")
        self.assertEqual(q1f0["noisy_rate"], 90_000)
        self.assertEqual(q1f0["idle_p99"], 1_500_000)
        q1f1 = vs[(1, 1)]
        self.assertEqual(q1f1["ratios"], [3.0], "the uncovered round is excluded")
        self.assertEqual(q1f1["excluded"], 1)
        self.assertEqual(q1f1["verdict"], "**NOT MET**")
        self.assertEqual(vs[(0, 0)]["median"], 5.0)
        self.assertEqual(vs[(0, 1)]["verdict"], "NOT MEASURED")
        covered = {(r["round"], r["qos"], r["flood"]): r["covered"] for r in rows}
        self.assertIs(covered[(2, 1, 1)], False)
        self.assertIs(covered[(1, 1, 0)], True)
        self.assertIsNone(covered[(1, 1, None)])
        busy = {r["stem"]: r["generator_core_busy"] for r in rows}
        self.assertEqual(busy["quiet-q1-idle.r1"], 60.0)

    def test_section_shows_every_run_and_the_flags(self):
        with tempfile.TemporaryDirectory() as root:
            write_fairness_results(root, self.runs())
            text = fairness.section(root)
        self.assertTrue(text.startswith("<!-- fairness:begin -->\n## Fairness"))
        self.assertTrue(text.endswith("<!-- fairness:end -->"))
        self.assertIn("**Goal NOT MET** in 2 of 4 combinations; the worst (quiet QoS 0, flood QoS 0)", text)
        goal = text[text.index("### Goal") : text.index("### Every run")]
        row = table_row(goal, "| QoS 1, 2,000 msg/s | QoS 1,")
        self.assertIn("| 3.00× |", row)
        self.assertIn("| 0 of 1 (1 excluded) |", row)
        self.assertIn("**NOT MET**", row)
        runs = text[text.index("### Every run") :]
        self.assertEqual(runs.count("\n| 1 | QoS 1 |"), 3)
        uncovered = table_row(runs, "| 2 | QoS 1 | QoS 1 |")
        self.assertIn("| **NO** |", uncovered)
        self.assertIn("| 10.00× |", uncovered)
        self.assertIn("**GENERATOR-BOUND**", table_row(runs, "| 1 | QoS 1 | QoS 1 |"))
        self.assertIn("**lost 3**", table_row(runs, "| 1 | QoS 0 | QoS 0 |"))
        self.assertIn("| 90,000 / 90,000 |", table_row(runs, "| 1 | QoS 0 | QoS 0 |"))
        self.assertIn("| 90,000 / 90,000 |", row_q0 := table_row(goal, "| QoS 0, 2,000 msg/s | QoS 0,"))
        self.assertIn("| 5.00× |", row_q0)
        self.assertIn("| 60% |", table_row(runs, "| 1 | QoS 1 | none (idle) |"))
        self.assertIn("0.50 0.40 0.30", table_row(runs, "| 1 | QoS 1 | none (idle) |"))
        # Each workload's command once, the flood's marked as such.
        self.assertEqual(text.count("nice -n 19 tidegate-bench pairs -n 8"), 1)
        self.assertIn("# noisy-q1-flood0 (noisy); the quiet one starts", text)

    def test_failed_flood_is_not_measured(self):
        ms = 1_000_000
        with tempfile.TemporaryDirectory() as root:
            write_fairness_results(root, {
                "quiet-q1-idle.r1": fairness_report(1 * ms),
                "quiet-q1-flood0.r1": fairness_report(2 * ms),
                "noisy-q1-flood0.r1": fairness_report(ms, 1, NOISY_WINDOW, qos=0),
                "quiet-q1-flood1.r1": fairness_report(ms),
                "quiet-q0-idle.r1": fairness_report(ms, qos=0),
                "quiet-q0-flood0.r1": fairness_report(ms, qos=0),
                "noisy-q0-flood0.r1": fairness_report(ms, 1, NOISY_WINDOW, qos=0),
                "quiet-q0-flood1.r1": fairness_report(ms, qos=0),
                "noisy-q0-flood1.r1": fairness_report(ms, 1, NOISY_WINDOW),
            })
            text = fairness.section(root)
            vs = {(v["qos"], v["flood"]): v for v in fairness.verdicts(fairness.collect(root, 1))}
        # Exactly 2× is within the goal; a flood that produced no report does not count.
        self.assertEqual(vs[(1, 0)]["verdict"], "met")
        self.assertEqual(vs[(1, 1)]["verdict"], "NOT MEASURED")
        self.assertIn("**flood failed**", table_row(text, "| 1 | QoS 1 | QoS 1 |"))
        self.assertIn("**Goal NOT MEASURED** for quiet QoS 1 / flood QoS 1; met where measured.", text)

    def test_all_met(self):
        ms = 1_000_000
        runs = {}
        for q in (1, 0):
            runs[f"quiet-q{q}-idle.r1"] = fairness_report(ms, qos=q)
            for flood in (0, 1):
                runs[f"quiet-q{q}-flood{flood}.r1"] = fairness_report(19 * ms // 10, qos=q)
                runs[f"noisy-q{q}-flood{flood}.r1"] = fairness_report(ms, 1, NOISY_WINDOW, qos=flood)
        with tempfile.TemporaryDirectory() as root:
            write_fairness_results(root, runs)
            text = fairness.section(root)
        self.assertIn("**Goal met**", text)
        self.assertEqual(text.count("| 1.90× | 1 of 1 |"), 4)

    def test_command_line_writes_into_the_file(self):
        with tempfile.TemporaryDirectory() as root:
            write_fairness_results(root, self.runs())
            out = f"{root}/benchmarks.md"
            with open(out, "w", encoding="utf-8") as f:
                f.write("# Benchmarks\n\n<!-- http:begin -->\nH\n<!-- http:end -->\n")
            self.assertEqual(render.main(["render.py", "--fairness", root, out]), 0)
            with open(out, encoding="utf-8") as f:
                text = f.read()
            self.assertIn("<!-- http:begin -->\nH\n<!-- http:end -->\n\n<!-- fairness:begin -->", text)
            self.assertEqual(len(render.kept_sections(out)), 2)


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
