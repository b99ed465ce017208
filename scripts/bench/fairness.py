"""The Fairness section of benchmarks.md (scripts/bench-fairness, issue 7).

Place in the flow: scripts/bench-fairness runs one Tidegate with two tenants and keeps, per
round K, the quiet tenant's reports alone (quiet-qQ-idle.rK.json) and beside a flood of the
other tenant (quiet-qQ-floodF.rK.json, with the flooding generator's own report
noisy-qQ-floodF.rK.json), /proc/stat copies around each quiet run (STEM.stat0, STEM.stat1),
runs.tsv (stem, load average at its start), commands.tsv (workload, role, command), meta.tsv
and tidegate.shown.toml. `render.py --fairness RESULTS_DIR [FILE]` calls `section` here and
puts the block between `<!-- fairness:begin -->` and `<!-- fairness:end -->`.

The goal (flooded p99 ≤ 2 × idle p99) is judged per quiet QoS and flood QoS on the median over
rounds of each round's ratio, the flooded run divided by the idle run measured just before it;
a flooded run whose flood did not cover its measured window does not count. Every run is shown.
Standard library only.
"""

import glob
import json
import os
import re

import render

MARK = "fairness"
GOAL = 2.0
QUIET_QOS = (1, 0)
FLOOD_QOS = (0, 1)
ROUND = re.compile(r"^quiet-q\d-(?:idle|flood\d)\.r(\d+)\.json$")


def load(root, stem):
    """The report STEM.json, or None when the run failed (no file, or not JSON)."""
    try:
        with open(f"{root}/{stem}.json", encoding="utf-8") as f:
            return json.load(f)
    except (OSError, json.JSONDecodeError):
        return None


def rounds(root):
    """Round numbers found in the results directory, ascending."""
    found = {int(m.group(1)) for m in
             (ROUND.match(os.path.basename(p)) for p in glob.glob(f"{root}/quiet-*.json")) if m}
    return sorted(found)


def median(values):
    vals = sorted(v for v in values if v is not None)
    if not vals:
        return None
    mid = len(vals) // 2
    return vals[mid] if len(vals) % 2 else (vals[mid - 1] + vals[mid]) / 2


def p99(rep):
    return render.dig(rep, "messages", "latency", "p99_ns")


def covered(quiet, noisy):
    """True when the flood's measured window (wall clock) contains the quiet run's, False when
    it does not, None when a report lacks the bounds (older generator) or is missing."""
    q0 = render.dig(quiet, "messages", "measured_from_unix_ms")
    q1 = render.dig(quiet, "messages", "measured_until_unix_ms")
    n0 = render.dig(noisy, "messages", "measured_from_unix_ms")
    n1 = render.dig(noisy, "messages", "measured_until_unix_ms")
    if None in (q0, q1, n0, n1):
        return None if noisy is not None else False
    return n0 <= q0 and q1 <= n1


def health(rep):
    """"ok", or what went wrong in a quiet run (loss, unacknowledged, errors), in bold."""
    m = rep["messages"]
    bad = []
    if m["streams"]["lost"]:
        bad.append(f"lost {m['streams']['lost']:,}")
    if m.get("unacked"):
        bad.append(f"unacked {m['unacked']:,}")
    if m.get("errors"):
        bad.append(f"{len(m['errors'])} errors")
    return f"**{', '.join(bad)}**" if bad else "ok"


def gen_cpu(rep):
    if rep is None:
        return "–"
    g = rep["generator"]
    flag = " **GENERATOR-BOUND**" if g["generator_bound"] else ""
    return f"{g['cpu_percent']:.0f}%{flag}"


def noisy_rates(rep):
    """The flood's published and delivered msg/s: at QoS 1 the gateway acknowledges (takes in)
    far more than its subscribers' sessions can be sent, and drops the rest from their queues."""
    if rep is None:
        return "–"
    m = rep["messages"]
    return f"{render.fmt_int(m['sent_per_sec'])} / {render.fmt_int(m['delivered_per_sec'])}"


def core_busy(root, stem, core):
    """Busy share of `core` over the quiet run STEM, from its /proc/stat copies."""
    a, b = f"{root}/{stem}.stat0", f"{root}/{stem}.stat1"
    if not (os.path.exists(a) and os.path.exists(b)):
        return None
    return render.core_busy(a, b).get(core)


def collect(root, generator_core):
    """One row per run: (round, quiet QoS, flood QoS or None for idle) with its reports and the
    ratio of its p99 to the same round's idle p99."""
    loads = {r[0]: r[1] for r in render.read_tsv(f"{root}/runs.tsv") if len(r) == 2}
    rows = []
    for k in rounds(root):
        for q in QUIET_QOS:
            idle = load(root, f"quiet-q{q}-idle.r{k}")
            for flood in (None,) + FLOOD_QOS:
                stem = f"quiet-q{q}-idle.r{k}" if flood is None else f"quiet-q{q}-flood{flood}.r{k}"
                quiet = idle if flood is None else load(root, stem)
                noisy = None if flood is None else load(root, f"noisy-q{q}-flood{flood}.r{k}")
                if quiet is None and noisy is None and not os.path.exists(f"{root}/{stem}.log"):
                    continue
                rows.append({
                    "round": k,
                    "qos": q,
                    "flood": flood,
                    "stem": stem,
                    "quiet": quiet,
                    "noisy": noisy,
                    "covered": None if flood is None else covered(quiet, noisy),
                    "ratio": None if flood is None else render.ratio(p99(quiet), p99(idle)),
                    "generator_core_busy": core_busy(root, stem, generator_core),
                    "loadavg": loads.get(stem),
                })
    return rows


def verdicts(rows):
    """Per (quiet QoS, flood QoS): the counted ratios, their median and the verdict."""
    out = []
    for q in QUIET_QOS:
        idle = [r for r in rows if r["qos"] == q and r["flood"] is None and r["quiet"]]
        for flood in FLOOD_QOS:
            runs = [r for r in rows if r["qos"] == q and r["flood"] == flood]
            counted = [r for r in runs if r["ratio"] is not None and r["covered"] is not False]
            ratios = [r["ratio"] for r in counted]
            med = median(ratios)
            if med is None:
                verdict = "NOT MEASURED"
            else:
                verdict = "met" if med <= GOAL else "**NOT MET**"
            out.append({
                "qos": q,
                "flood": flood,
                "idle_p99": median(p99(r["quiet"]) for r in idle),
                "flood_p99": median(p99(r["quiet"]) for r in counted),
                "ratios": ratios,
                "median": med,
                "within": sum(1 for x in ratios if x <= GOAL),
                "excluded": len(runs) - len(counted),
                "noisy_rate": median(render.dig(r["noisy"], "messages", "delivered_per_sec")
                                     for r in counted),
                "noisy_sent": median(render.dig(r["noisy"], "messages", "sent_per_sec")
                                     for r in counted),
                "broker_cpu": median(render.dig(r["quiet"], "broker", "cpu_percent")
                                     for r in counted),
                "verdict": verdict,
            })
    return out


def overall_verdict(vs):
    """One line: met only when every combination was measured and met."""
    failed = [v for v in vs if v["verdict"] == "**NOT MET**"]
    missing = [v for v in vs if v["median"] is None]
    if failed:
        worst = max(failed, key=lambda v: v["median"])
        return (
            f"**Goal NOT MET** in {len(failed)} of {len(vs)} combinations; the worst (quiet QoS "
            f"{worst['qos']}, flood QoS {worst['flood']}) has a flooded p99 of "
            f"{render.fmt_ratio(worst['median'])} its idle value (median over rounds)."
        )
    if missing:
        which = ", ".join(f"quiet QoS {v['qos']} / flood QoS {v['flood']}" for v in missing)
        return f"**Goal NOT MEASURED** for {which}; met where measured."
    return "**Goal met**: in every combination the median flooded p99 is within 2× of idle."


def goal_table(vs, meta):
    o = [
        "| quiet tenant | flood (noisy tenant) | quiet p99 idle | quiet p99 flooded | "
        "flooded / idle (median) | rounds within 2× | every round's ratio | noisy published / delivered msg/s | "
        "broker CPU, flooded | verdict |",
        "|---|---|---:|---:|---:|---:|---|---:|---:|---|",
    ]
    for v in vs:
        excluded = f" ({v['excluded']} excluded)" if v["excluded"] else ""
        o.append(
            f"| QoS {v['qos']}, {int(meta.get('rate', '0')):,} msg/s | QoS {v['flood']}, "
            f"{meta.get('noisy_pairs', '?')} pairs × window {meta.get('noisy_window', '?')} | {render.fmt_ns(v['idle_p99'])} | "
            f"{render.fmt_ns(v['flood_p99'])} | {render.fmt_ratio(v['median'])} | "
            f"{v['within']} of {len(v['ratios'])}{excluded} | "
            f"{', '.join(render.fmt_ratio(x) for x in v['ratios']) or '–'} | "
            f"{render.fmt_int(v['noisy_sent'])} / {render.fmt_int(v['noisy_rate'])} | "
            f"{render.fmt_pct(v['broker_cpu'])} | {v['verdict']} |"
        )
    return o


def runs_table(rows):
    o = [
        "| round | quiet | flood | quiet p50 | p99 | p99.9 | p99 / idle | p99 from write | "
        "send lag p99 | quiet delivered msg/s | quiet health | noisy published / delivered msg/s | noisy p99 | "
        "broker CPU | generator core busy | quiet gen CPU | noisy gen CPU | flood covered | "
        "load avg at start |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for r in rows:
        flood = "none (idle)" if r["flood"] is None else f"QoS {r['flood']}"
        q, n = r["quiet"], r["noisy"]
        if q is None:
            o.append(f"| {r['round']} | QoS {r['qos']} | {flood} | run failed |" + " |" * 15)
            continue
        m = q["messages"]
        lat = m["latency"]
        cov = {None: "–", True: "yes", False: "**NO**"}[r["covered"]]
        if r["flood"] is not None and n is None:
            cov = "**flood failed**"
        o.append(
            f"| {r['round']} | QoS {r['qos']} | {flood} | {render.fmt_ns(lat['p50_ns'])} | "
            f"{render.fmt_ns(lat['p99_ns'])} | {render.fmt_ns(lat['p999_ns'])} | "
            f"{render.fmt_ratio(r['ratio'])} | "
            f"{render.fmt_ns(render.dig(m, 'latency_from_write', 'p99_ns'))} | "
            f"{render.fmt_ns(render.dig(m, 'send_lag', 'p99_ns'))} | "
            f"{render.fmt_int(m['delivered_per_sec'])} | {health(q)} | "
            f"{noisy_rates(n)} | "
            f"{render.fmt_ns(render.dig(n, 'messages', 'latency', 'p99_ns'))} | "
            f"{render.fmt_pct(render.dig(q, 'broker', 'cpu_percent'))} | "
            f"{render.fmt_pct(r['generator_core_busy'])} | {gen_cpu(q)} | "
            f"{'–' if r['flood'] is None else gen_cpu(n)} | {cov} | {r['loadavg'] or '–'} |"
        )
    return o


def section(root):
    """The Fairness section, markers included."""
    meta = {r[0]: r[1] for r in render.read_tsv(f"{root}/meta.tsv") if len(r) == 2}
    commands = [r for r in render.read_tsv(f"{root}/commands.tsv") if len(r) == 3]
    gen_core = int(meta.get("generator_cpu", "1"))
    rows = collect(root, gen_core)
    vs = verdicts(rows)
    profile = meta.get("profile", "release")
    o = [
        f"<!-- {MARK}:begin -->",
        "## Fairness: one tenant flooding, another tenant's latency",
        "",
        f"Issue 7. Generated by `scripts/bench-fairness` on {meta.get('started', '?')} (finished "
        f"{meta.get('finished', '?')}); raw JSON in `{meta.get('results', root)}`. Do not edit by "
        "hand: run the command again.",
        "",
    ]
    if meta.get("quick") == "1":
        o += ["**QUICK RUN**: short durations, for trying the script only.", ""]
    if profile != "release":
        o += [f"**{profile.upper()} BUILD**: for trying the script only; the figures are not comparable.", ""]
    o += [
        f"- {meta.get('nproc', '?')} cores ({meta.get('cpu_model', '?')}), {meta.get('kernel', '?')}; "
        f"{meta.get('tidegate', 'tidegate ?')} and {meta.get('bench', 'tidegate-bench ?')} in {profile} builds",
        f"- load average (1, 5, 15 min) at start {meta.get('loadavg_start', '?')}, at end "
        f"{meta.get('loadavg_end', '?')} (and at the start of every run, in the last table)",
        f"- one Tidegate (`{meta.get('broker_cmd', '?')}`, configuration below) pinned to core "
        f"{meta.get('broker_cpu', '0')}, in-memory persistence, two tenants, `quiet` and `noisy`, "
        "each bound to its own tcp listener with `allow_anonymous = true` and "
        + (
            f"no quotas but the noisy tenant's `[tenants.quotas] {meta['noisy_quota']}`"
            if meta.get("noisy_quota")
            else "no quotas"
        )
        + f"; MQTT 3.1.1, {meta.get('payload', '64')}-byte payloads, loopback",
        f"- quiet tenant: `pairs`, {meta.get('pairs', '?')} publisher→subscriber pairs, "
        f"{int(meta.get('rate', '0')):,} msg/s in total, open loop, {meta.get('duration', '?')} s "
        "measured after 1 s of warm-up; p50/p99/p99.9 are publish → deliver from the intended "
        "send time (a late generator shows as `send lag`; `from write` leaves it out)",
        f"- noisy tenant: `pairs`, {meta.get('noisy_pairs', '?')} pairs, closed loop with a window "
        f"of {meta.get('noisy_window', '?')} messages in flight per publisher (as fast as the "
        "gateway takes them; QoS 0 messages the gateway drops for a full subscriber queue are "
        "counted lost by the noisy generator, not by the quiet one), started "
        f"{meta.get('lead', '?')} s before the quiet generator and measured over a longer window "
        "that must contain the quiet one (`flood covered`; a run where it does not is excluded)",
        f"- **both generators share core {gen_core}** (the machine has two cores and the broker "
        f"has the other); the flood runs at `nice -n {meta.get('noisy_nice', '?')}` so that the "
        "quiet generator's timing suffers as little as possible from it; `generator core busy` "
        "is that core's busy share over the quiet run, and a generator at ≥ 90% of its core is "
        "marked **GENERATOR-BOUND**",
        f"- each round measures the quiet tenant idle, then flooded at QoS 0, then at QoS 1, for "
        f"quiet QoS 1 and then 0; {meta.get('repeat', '?')} rounds. The ratio is a flooded run's "
        "p99 divided by the idle p99 of its own round; the verdict takes the median over rounds.",
        "",
    ]
    busy = 0.0
    for key in ("loadavg_start", "loadavg_end"):
        try:
            busy = max(busy, float(meta.get(key, "0").split()[0]))
        except (ValueError, IndexError):
            pass
    if busy > 2.5:
        o += [
            f"**The machine was busy (1-minute load up to {busy:.2f}, with this benchmark's own "
            "three processes counting for about 2): other work shared it.**",
            "",
        ]
    o += ["### Goal: flooded p99 ≤ 2 × idle p99", "", overall_verdict(vs), ""]
    o += goal_table(vs, meta)
    o += [
        "",
        "The shape of the flood matters: the same benchmark with the flood spread over many "
        "connections (`scripts/bench-fairness --noisy-pairs 200 --noisy-window 16 --out "
        "docs/benchmarks-fairness-wide.md`) is kept in docs/benchmarks-fairness-wide.md, and "
        "docs/architecture.md (\"What this does not give\") explains the difference.",
    ]
    o += ["", "### Every run", ""]
    o += runs_table(rows)
    o += ["", "### Exact commands", "", "```sh", "scripts/bench-fairness"]
    if meta.get("broker_cmd"):
        o.append(f"# broker: {meta['broker_cmd']}")
    seen = set()
    for workload, role, cmd in commands:
        if (workload, role) not in seen:
            seen.add((workload, role))
            o.append(f"# {workload} ({role}){'; the quiet one starts ' + meta.get('lead', '?') + ' s later' if role == 'noisy' else ''}")
            o.append(cmd)
    o += ["```", ""]
    if os.path.exists(f"{root}/tidegate.shown.toml"):
        o += ["<details><summary>tidegate.toml</summary>", "", "```toml"]
        o += [ln.rstrip() for ln in render.read_lines(f"{root}/tidegate.shown.toml")]
        o += ["```", "", "</details>"]
    o.append(f"<!-- {MARK}:end -->")
    return "\n".join(o)
