"""Summaries, ratios, targets, the markdown report, the JSON and the plots."""
from __future__ import annotations

import json
import os
import statistics

from . import workloads as W

PARAM_BYTES = W.PARAM_ARRAYS * W.PARAM_SHAPE[0] * W.PARAM_SHAPE[1] * 4
PEER_LABEL = {"rlink": "rlink", "rlink-local": "rlink (same host: unix + shm)",
              "rlink-reliable": "rlink reliable",
              "rlink-reliable-nocopy": "rlink reliable copy=False",
              "rlink-local-reliable": "rlink reliable (same host)", "pyzmq": "pyzmq",
              "portal": "portal", "mp.connection": "mp.connection",
              "socket+pickle5": "socket+pickle5"}
LOCAL = "rlink-local"
# rlink-local runs over AF_UNIX (and shared memory): its "C floor" is the
# AF_UNIX twin of the row's TCP floor. Every other peer is over TCP.
UNIX_FLOOR = {"tcp_stream_1MiB": "unix_stream_1MiB",
              "tcp_pingpong_64B": "unix_pingpong_64B",
              "tcp_100B_writev64": "unix_100B_writev64"}
PEER_FLOOR = {LOCAL: UNIX_FLOOR, "rlink-local-reliable": UNIX_FLOOR}
# each reliable peer and the unreliable one it is measured against
RELIABLE_PAIRS = {"rlink-reliable": "rlink", "rlink-reliable-nocopy": "rlink",
                  "rlink-local-reliable": LOCAL}
# how a reliable peer's target is labelled ("" for the one every run has)
RELIABLE_LABEL = {"rlink-reliable": "", "rlink-reliable-nocopy": " copy=False",
                  "rlink-local-reliable": " same host"}
DERIVED_FLOORS = ["tcp_stream_1MiB", "unix_stream_1MiB"]   # best of _autobuf / _4MiBbuf
# The C model of reliable mode's W2 work (floors.c, checked_stream): each
# checked stream over the plain one, beside each reliable peer over rlink.
RELIABLE_MODEL = {"checksums": "tcp_w2_stream_crc", "checksums + retained copy": "tcp_w2_stream_crc_copy"}
RELIABLE_MODEL_BASE = "tcp_w2_stream"
# W3 same-host target: rlink-local against the best of these (all over TCP)
W3_OTHERS = ["pyzmq", "portal", "mp.connection", "socket+pickle5", "rlink"]


def floor_for(peer, fname):
    return PEER_FLOOR.get(peer, {}).get(fname, fname)


def _stats(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values),
            "n": len(values), "values": values}


def _rows(order, cases_def):
    """(row id, case, key, title, unit, higher is better, floor name, floor key)."""
    rows = []
    for c in order:
        case = cases_def[c]
        if c == "W4":
            rows.append(("W4 p50", c, "p50_us", "W4 round trip, p50", "µs", False,
                         "tcp_pingpong_64B", "p50_us"))
            rows.append(("W4 p99", c, "p99_us", "W4 round trip, p99", "µs", False,
                         "tcp_pingpong_64B", "p99_us"))
        else:
            rows.append((c, c, "value", case["title"], case["metric"], case["higher"],
                         case["floor"], None))
    return rows


def _floor_by_repeat(floor_runs, name, key, row_id, case):
    """{repeat: floor value} from the floor runs made right before this case;
    for a repeat without one, the reference run of that floor in the same
    repeat (case None: unix_100B_writev64 for rlink-local's W1 and scaling)."""
    out, ref = {}, {}
    for r in floor_runs:
        if r["name"] == name and r.get("case") in (case, None):
            v = r[key] if key else r["value"]
            if row_id == "W3":   # 2 x 64 MiB at the measured stream rate
                v = 2 * PARAM_BYTES / (v * 1e9)
            (out if r.get("case") == case else ref)[r["repeat"]] = v
    return {**ref, **out}


def _paired(a: dict, b: dict):
    """Ratios a[rep] / b[rep] over the repeats both have: median, min, max."""
    ratios = [a[k] / b[k] for k in sorted(a) if k in b and b[k]]
    if not ratios:
        return None
    return {"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios),
            "values": ratios}


def build_results(info, args, cases_def, order, cases, peers, runs, floor_runs, fspecs,
                  failures, callgrind, elapsed):
    rows = []
    for row_id, c, key, title, unit, higher, fname, fkey in _rows(
            [c for c in order if c in cases], cases_def):
        fl = _floor_by_repeat(floor_runs, fname, fkey, row_id, c)
        row = {"id": row_id, "case": c, "title": title, "unit": unit, "higher_is_better": higher,
               "floor_name": fname, "floor": _stats(list(fl.values())), "peers": {}}
        pfl = {}   # peer -> its floor by repeat, where it is not the row's floor
        for lp in PEER_FLOOR:
            if lp in cases_def[c]["peers"] and lp in peers and floor_for(lp, fname) != fname:
                lname = floor_for(lp, fname)
                pfl[lp] = _floor_by_repeat(floor_runs, lname, fkey, row_id, c)
                row["local_floor_name"] = lname
                row["local_floor"] = _stats(list(pfl[lp].values()))
        by_rep = {}
        for p in cases_def[c]["peers"]:
            if p not in peers:
                continue
            rr = [r for r in runs if r["case"] == c and r["peer"] == p]
            by_rep[p] = {r["repeat"]: r[key] for r in rr}
            st = _stats([r[key] for r in rr])
            if st is None:
                row["peers"][p] = None
                continue
            if cases_def[c].get("senders", 1) > 1:
                shares = [r["shares"] for r in rr]
                st["shares"] = shares
                st["share_gap_median"] = statistics.median(
                    [(max(s) - min(s)) / max(s) if max(s) else 1.0 for s in shares])
            row["peers"][p] = st
        # Ratios of medians, and the same ratios paired repeat by repeat
        # (each repeat's peer value over the floor / pyzmq measured seconds
        # to a minute before or after it).
        zq = (row["peers"].get("pyzmq") or {}).get("median")
        for p, st in row["peers"].items():
            if st is None:
                continue
            pf = pfl.get(p, fl)
            fst = _stats(list(pf.values()))
            flm = fst["median"] if fst else None
            st["floor_name"] = row.get("local_floor_name", fname) if p in pfl else fname
            st["vs_floor"] = st["median"] / flm if flm else None
            st["vs_pyzmq"] = st["median"] / zq if zq else None
            st["paired_vs_floor"] = _paired(by_rep[p], pf)
            st["paired_vs_pyzmq"] = _paired(by_rep[p], by_rep.get("pyzmq", {}))
        st = row["peers"].get(LOCAL)
        if row_id == "W3" and st:
            # rlink-local against the fastest other peer, by medians and per repeat
            others = {p: row["peers"][p]["median"] for p in W3_OTHERS if row["peers"].get(p)}
            if others:
                best = min(others, key=others.get)
                st["best_other"] = best
                st["vs_best_other"] = st["median"] / others[best]
                best_rep = {}
                for p in others:
                    for k, v in by_rep[p].items():
                        best_rep[k] = min(best_rep.get(k, v), v)
                st["paired_vs_best_other"] = _paired(by_rep[LOCAL], best_rep)
        for rel, unrel in RELIABLE_PAIRS.items():
            if rel in by_rep and unrel in by_rep and row["peers"].get(rel):
                row["peers"][rel]["paired_vs_unreliable"] = _paired(by_rep[rel], by_rep[unrel])
        rows.append(row)
    scaling = _scaling(rows, cases_def)
    results = {"machine": info, "args": args, "elapsed_s": elapsed,
               "cases": {c: {k: v for k, v in cases_def[c].items()} for c in cases},
               "rows": rows, "scaling": scaling,
               "floors": {name: _stats([r["value"] for r in floor_runs if r["name"] == name])
                          for name in list(fspecs) + DERIVED_FLOORS},
               "floors_note": "each case's floors run right before it in every repeat; "
                              "these summaries pool all of a floor's runs",
               "floor_runs": floor_runs, "runs": runs, "failures": failures,
               "callgrind": callgrind}
    results["reliable_model"] = _reliable_model(floor_runs)
    results["targets"] = _targets(results)
    return results


def _reliable_model(floor_runs):
    """What reliable mode's work costs W2 in C on this machine, this run:
    {label: {"ratio", "paired"}} (each checked stream over the plain one), or
    None when those floors did not run."""
    def by_rep(name):
        return {r["repeat"]: r["value"] for r in floor_runs if r["name"] == name}
    base = by_rep(RELIABLE_MODEL_BASE)
    if not base:
        return None
    out = {}
    for label, name in RELIABLE_MODEL.items():
        runs = by_rep(name)
        if runs:
            out[label] = {"ratio": statistics.median(runs.values()) / statistics.median(base.values()),
                          "paired": _paired(runs, base)}
    return out or None


def _scaling(rows, cases_def):
    out = {}
    by_id = {r["id"]: r for r in rows}
    for rid, k in [("W1", 1)] + [(f"S{k}", k) for k in (4, 16, 64)]:
        row = by_id.get(rid)
        if not row:
            continue
        for p in ("rlink", LOCAL, "pyzmq"):
            st = row["peers"].get(p)
            if st:
                out.setdefault(p, {})[k] = {"median": st["median"], "min": st["min"],
                                            "max": st["max"]}
    return out


def _peer(results, rid, peer):
    for r in results["rows"]:
        if r["id"] == rid:
            return r["peers"].get(peer), r
    return None, None


def _targets(results):
    t = []

    def med(rid, peer):
        st, _ = _peer(results, rid, peer)
        return st["median"] if st else None

    def floor(rid):
        _, row = _peer(results, rid, "rlink")
        return row["floor"]["median"] if row and row["floor"] else None

    def local_floor(rid):
        _, row = _peer(results, rid, LOCAL)
        return row["local_floor"]["median"] if row and row.get("local_floor") else None

    def add(name, rid, peer, attr, op, bound, detail, extra_ok=True):
        st, _ = _peer(results, rid, peer)
        v = st.get(attr) if st else None
        ok = None if v is None else (v >= bound if op == ">=" else v <= bound) and extra_ok
        paired = st.get("paired_" + attr) if st else None
        t.append({"target": name, "measured": v, "bound": f"{op} {bound}", "met": ok,
                  "detail": detail, "paired": paired})

    def f(v, unit):
        return fmt(v, unit) + ("" if unit == "s" else f" {unit}") if v is not None else "–"

    add("W1: rlink ≥ 10× pyzmq (msg/s)", "W1", "rlink", "vs_pyzmq", ">=", 10,
        f"{f(med('W1', 'rlink'), 'msg/s')} vs {f(med('W1', 'pyzmq'), 'msg/s')}")
    add("W2 1→1: rlink ≥ 1.0× C TCP stream floor (GB/s)", "W2", "rlink", "vs_floor", ">=", 1.0,
        f"{f(med('W2', 'rlink'), 'GB/s')} vs {f(floor('W2'), 'GB/s')}")
    st, _ = _peer(results, "W2x2", "rlink")
    gap = st.get("share_gap_median") if st else None
    add("W2 2→1: rlink ≥ 0.9× floor, actors within 10% of each other", "W2x2", "rlink",
        "vs_floor", ">=", 0.9,
        f"{f(med('W2x2', 'rlink'), 'GB/s')} vs {f(floor('W2x2'), 'GB/s')}; median gap between "
        f"the actors' shares " + (f"{gap:.1%}" if gap is not None else "n/a"),
        gap is not None and gap <= 0.10)
    add("W3: rlink ≤ 1.1× floor (2 × 64 MiB at the TCP stream rate)", "W3", "rlink", "vs_floor",
        "<=", 1.1, f"{f(med('W3', 'rlink'), 's')} vs {f(floor('W3'), 's')}")
    add("W4: rlink p50 ≤ 1.3× C 64 B ping-pong p50", "W4 p50", "rlink", "vs_floor", "<=", 1.3,
        f"{f(med('W4 p50', 'rlink'), 'µs')} vs {f(floor('W4 p50'), 'µs')}")
    add("W4: rlink p99 ≤ 2× C 64 B ping-pong p99", "W4 p99", "rlink", "vs_floor", "<=", 2.0,
        f"{f(med('W4 p99', 'rlink'), 'µs')} vs {f(floor('W4 p99'), 'µs')}")
    # Issue 8, same host: rlink-local (AF_UNIX + shared memory) beside the TCP
    # peers and the AF_UNIX floors measured in the same run.
    if any(_peer(results, rid, LOCAL)[0] for rid in ("W2", "W3", "W4 p50")):
        add("W2 1→1 same host: rlink-local ≥ 1.8× pyzmq (over TCP) (GB/s)", "W2", LOCAL,
            "vs_pyzmq", ">=", 1.8, f"{f(med('W2', LOCAL), 'GB/s')} vs {f(med('W2', 'pyzmq'), 'GB/s')}")
        add("W2 1→1 same host: rlink-local ≥ 1.0× C AF_UNIX stream floor (GB/s)", "W2", LOCAL,
            "vs_floor", ">=", 1.0, f"{f(med('W2', LOCAL), 'GB/s')} vs {f(local_floor('W2'), 'GB/s')}")
        st, _ = _peer(results, "W3", LOCAL)
        best = st.get("best_other") if st else None
        add("W3 same host: rlink-local ≤ 0.5× the best other peer (s)", "W3", LOCAL,
            "vs_best_other", "<=", 0.5,
            f"{f(med('W3', LOCAL), 's')} vs {f(med('W3', best), 's') if best else '–'}"
            + (f" ({PEER_LABEL[best]})" if best else ""))
        add("W4 same host: rlink-local p50 ≤ 1.3× C AF_UNIX 64 B ping-pong p50", "W4 p50", LOCAL,
            "vs_floor", "<=", 1.3,
            f"{f(med('W4 p50', LOCAL), 'µs')} vs {f(local_floor('W4 p50'), 'µs')}")
    for rel, unrel in RELIABLE_PAIRS.items():
        where = RELIABLE_LABEL[rel]
        for rid, unit in (("W1", "msg/s"), ("W2", "GB/s")):
            a, b = med(rid, rel), med(rid, unrel)
            if where and not a:
                continue   # an opt-in peer that did not run
            v = a / b if a and b else None
            st, _ = _peer(results, rid, rel)
            t.append({"target": f"{rid}{where}: reliable ≥ 0.9× unreliable", "measured": v,
                      "bound": ">= 0.9", "met": None if v is None else v >= 0.9,
                      "detail": f"{f(a, unit)} vs {f(b, unit)}",
                      "paired": st.get("paired_vs_unreliable") if st else None})
    return t


# ------------------------------------------------------------------ markdown

def fmt(v, unit):
    if v is None:
        return "–"
    if unit == "msg/s":
        if v >= 1e6:
            return f"{v / 1e6:.2f}M"
        return f"{v / 1e3:.0f}k" if v >= 1e4 else f"{v / 1e3:.1f}k"
    if unit == "GB/s":
        return f"{v:.2f}"
    if unit == "s":
        return f"{v * 1e3:.0f} ms" if v < 10 else f"{v:.1f} s"
    if unit == "µs":
        return f"{v:.0f}" if v >= 100 else f"{v:.1f}"
    return f"{v:.3g}"


def _cell(st, unit):
    if not st:
        return "failed"
    return f"{fmt(st['median'], unit)} [{fmt(st['min'], unit)}–{fmt(st['max'], unit)}]"


def _ratio(v):
    if v is None:
        return "–"
    return f"{v:.3f}" if v < 0.1 else f"{v:.2f}"


def markdown(results) -> str:
    info = results["machine"]
    rows = results["rows"]
    peers = [p for p in PEER_LABEL if any(p in r["peers"] for r in rows)]
    units_note = {"msg/s": "↑", "GB/s": "↑", "s": "↓", "µs": "↓"}
    out = []
    a = results["args"]
    cmd = "python -m benchmarks" + (" --quick" if a.get("quick") else "") + \
          (f" --repeats {a['repeats']}" if a.get("repeats") != (3 if a.get("quick") else 5) else "")
    out.append(f"Machine: {info['cpu']}, {info['nproc']} cores, {info.get('mem_gib')} GiB, "
               f"Linux {info['kernel']}, Python {info['python']}, numpy {info['numpy']}; "
               f"rlink {info.get('rlink')} ({info.get('git')}), pyzmq {info.get('pyzmq')} "
               f"(libzmq {info.get('libzmq')}), msgpack {info.get('msgpack')}, "
               f"portal {info.get('portal')}; C floors: {info.get('cc')}. "
               f"Load average {info['loadavg_start'][0]:.2f} at start, "
               f"{info.get('loadavg_end', [float('nan')])[0]:.2f} at end.")
    out.append(f"Command: `{cmd}`; {a.get('repeats')} repeats, peers interleaved, "
               f"median [min–max]; run time {results['elapsed_s'] / 60:.1f} min."
               + (" --quick: a quarter to a fifth of the messages per trial (W4: 5,000 round "
                  "trips), no callgrind." if a.get("quick") else ""))
    out.append("")
    ux = any("local_floor_name" in r for r in rows)   # rlink-local ran: AF_UNIX floors too
    out.append("| workload | unit | C floor (TCP) | " + ("C floor (AF_UNIX) | " if ux else "")
               + " | ".join(PEER_LABEL[p] for p in peers) + " |")
    out.append("|---|---|---|" + ("---|" if ux else "") + "---|" * len(peers))
    for r in rows:
        cells = [(_cell(r["peers"][p], r["unit"]) if p in r["peers"] else "") for p in peers]
        fl = _cell(r["floor"], r["unit"]) if r["floor"] else "n/a"
        if ux:
            fl += " | " + (_cell(r["local_floor"], r["unit"]) if r.get("local_floor") else
                           ("n/a" if "local_floor_name" in r else ""))
        out.append(f"| {r['title']} | {r['unit']} {units_note.get(r['unit'], '')} | {fl} | "
                   + " | ".join(cells) + " |")
    out.append("")
    if LOCAL in peers:
        out.append(f"{PEER_LABEL[LOCAL]} is rlink with its defaults on one host: the actors "
                   "connect over an abstract AF_UNIX socket and hand trajectories of 64 KiB or "
                   "more to the learner through shared memory; every other peer, \"rlink\" "
                   "included, runs over TCP loopback. Its C floor is the AF_UNIX one.")
        out.append("")
    out.append("Ratios of medians, each peer ÷ the C floor / ÷ pyzmq (for µs and s, lower is "
               "better; for msg/s and GB/s, higher is better; rlink-local ÷ the AF_UNIX floor):")
    out.append("")
    out.append("| workload | C floor used | " + " | ".join(PEER_LABEL[p] for p in peers) + " |")
    out.append("|---|---|" + "---|" * len(peers))
    for r in rows:
        cells = []
        for p in peers:
            st = r["peers"].get(p) if p in r["peers"] else None
            if p not in r["peers"]:
                cells.append("")
            elif not st:
                cells.append("failed")
            else:
                cells.append(f"{_ratio(st['vs_floor'])} / {_ratio(st['vs_pyzmq'])}")
        fname = r["floor_name"] + (" (2 × 64 MiB)" if r["id"] == "W3" else "")
        if "local_floor_name" in r:
            fname += f"; rlink-local: {r['local_floor_name']}"
        out.append(f"| {r['title']} | {fname} | " + " | ".join(cells) + " |")
    out.append("")
    shares = [(p, st) for r in rows if r["id"] == "W2x2" for p, st in r["peers"].items() if st]
    if shares:
        out.append("W2 2 → 1, each actor's share of the messages received while both were "
                   "sending (per repeat): " + "; ".join(
                       f"{PEER_LABEL[p]} " + ", ".join(
                           "/".join(f"{x:.0%}" for x in s) for s in st["shares"])
                       for p, st in shares) + ".")
        out.append("")
    cpu = {}   # (case, peer) -> ([sender µs per message], [receiver µs per message]) by repeat
    for r in results["runs"]:
        if "receiver_cpu_us" in r:
            snd, rcv = cpu.setdefault((r["case"], r["peer"]), ([], []))
            snd.append(statistics.mean(r["sender_cpu_us"]))
            rcv.append(r["receiver_cpu_us"])
    if cpu:
        out.append("CPU time per message, sender / receiver process (µs, every thread, user + "
                   "system, from \"go\" to the last message; the receiver's includes the "
                   "harness's checks; median of the repeats):")
        out.append("")
        out.append("| workload | " + " | ".join(PEER_LABEL[p] for p in peers) + " |")
        out.append("|---|" + "---|" * len(peers))
        for r in rows:
            cells = []
            for p in peers:
                v = cpu.get((r["case"], p))
                cells.append(f"{statistics.median(v[0]):.1f} / {statistics.median(v[1]):.1f}"
                             if v else "")
            if any(cells):
                out.append(f"| {r['title']} | " + " | ".join(cells) + " |")
        out.append("")
    ss = [(r["case"], r["repeat"], r["socket_share"]) for r in results["runs"]
          if r["peer"] == LOCAL and "socket_share" in r]
    if ss:
        out.append(f"{PEER_LABEL[LOCAL]}: share of the trajectories' array bytes that still "
                   "crossed the socket (the region was full), per trial: " + "; ".join(
                       f"{c} " + ", ".join(f"{x:.1%}" for cc, _, x in sorted(ss, key=lambda t: t[1])
                                           if cc == c)
                       for c in dict.fromkeys(c for c, _, _ in ss)) + ".")
        out.append("")
    out.append("Targets (rlink over TCP; \"same host\": rlink-local; this run). "
               "\"measured\" is the ratio of the medians; "
               "\"paired\" is the same ratio taken repeat by repeat (each repeat's figure over "
               "the floor or peer measured next to it), median [min–max]:")
    out.append("")
    out.append("| target | measured | paired | met |")
    out.append("|---|---|---|---|")
    for t in results["targets"]:
        m = "–" if t["measured"] is None else f"{t['measured']:.3g}×"
        if t.get("detail"):
            m += f" ({t['detail']})"
        pr = t.get("paired")
        pc = f"{pr['median']:.2f}× [{pr['min']:.2f}–{pr['max']:.2f}]" if pr else "–"
        met = {True: "yes", False: "**no**", None: "n/a"}[t["met"]]
        out.append(f"| {t['target']} | {m} | {pc} | {met} |")
    out.append("")
    model = results.get("reliable_model")
    if model:
        out.append("What reliable mode's W2 work costs in C on this machine (floors.c `w2stream`, "
                   "same run; each checked stream ÷ the plain one, ratio of the medians, paired "
                   "median [min–max]): " + "; ".join(
                       f"{label} {m['ratio']:.2f}×" + (
                           f" ({m['paired']['median']:.2f}× [{m['paired']['min']:.2f}–"
                           f"{m['paired']['max']:.2f}])" if m["paired"] else "")
                       for label, m in model.items()) + ".")
        out.append("")
    fl = results["floors"]
    if any(fl.values()):
        out.append("C floors: " + "; ".join(
            f"{k} {fmt(v['median'], _floor_unit(k))} {_floor_unit(k)} "
            f"[{fmt(v['min'], _floor_unit(k))}–{fmt(v['max'], _floor_unit(k))}]"
            for k, v in fl.items() if v) + ".")
        for name in ("tcp_pingpong_64B", "unix_pingpong_64B"):
            pp = [r for r in results["floor_runs"] if r["name"] == name]
            if pp:
                out.append(f"({name} p99 {statistics.median(r['p99_us'] for r in pp):.1f} µs.)")
        out.append("")
    cg = results.get("callgrind")
    if cg:
        out.append(callgrind_markdown(cg))
    if results.get("skipped_peers"):
        out.append("Skipped: " + "; ".join(f"{p} ({why})" for p, why in
                                          results["skipped_peers"].items()) + ".")
        out.append("")
    fails = results["failures"]
    if fails:
        out.append(f"{len(fails)} trial(s) failed: " + ", ".join(
            f"{f.get('case', f.get('floor'))} {f.get('peer', '')} (repeat {f['repeat']})"
            for f in fails) + "; errors in the JSON.")
    return "\n".join(out)


def _floor_unit(name):
    if "_stream" in name or name == "memcpy":
        return "GB/s"
    return "µs" if "_pingpong_64B" in name else "msg/s"


def callgrind_markdown(cg) -> str:
    if cg.get("skipped"):
        return f"callgrind: skipped ({cg['skipped']}).\n"
    lines = [f"callgrind (valgrind {cg.get('valgrind')}), W1, N = {cg.get('n')} messages, "
             "user-space instructions per message (all threads of the process, "
             "kernel excluded):", "",
             "| peer | send (actor process) | receive (learner process) |", "|---|---|---|"]
    for p, d in cg.get("peers", {}).items():
        lines.append(f"| {p} | {d['send']['per_message']:,.0f} | {d['receive']['per_message']:,.0f} |")
    lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------- files

def _rounded(x):
    """Floats to 6 significant digits (the measurements have 2-3)."""
    if isinstance(x, float):
        return float(f"{x:.6g}")
    if isinstance(x, dict):
        return {k: _rounded(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_rounded(v) for v in x]
    return x


def write_all(results, out_dir, plots=True):
    paths = []
    p = os.path.join(out_dir, "results.json")
    with open(p, "w") as f:   # compact: pipe through `python -m json.tool` to read
        json.dump(_rounded(results), f, separators=(",", ":"), default=str)
    paths.append(p)
    p = os.path.join(out_dir, "results.md")
    with open(p, "w") as f:
        f.write(markdown(results) + "\n")
    paths.append(p)
    if plots:
        try:
            paths += plot_all(results, out_dir)
        except ImportError as e:
            print(f"plots skipped: {e} (pip install matplotlib)")
    return paths


def plot_all(results, out_dir):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colors = {"rlink": "#d62728", "rlink-local": "#e377c2", "rlink-reliable": "#ff9896",
              "rlink-reliable-nocopy": "#ffbb78",
              "rlink-local-reliable": "#f7b6d2", "pyzmq": "#1f77b4",
              "portal": "#2ca02c", "mp.connection": "#9467bd", "socket+pickle5": "#8c564b",
              "C floor": "#444444"}
    rows = {r["id"]: r for r in results["rows"]}
    info = results["machine"]
    subtitle = (f"{info['cpu']}, {info['nproc']} cores, Linux {info['kernel']}, "
                f"Python {info['python']}; median of {results['args']['repeats']}, bars span min–max")
    paths = []

    def rid_is_not_w1(row):   # W1's AF_UNIX floor (64 per writev) is a reference, far off scale
        return row["id"] != "W1"

    def bars(ax, row, title, scale=1.0, unit="", floor_label=None):
        names = [p for p, st in row["peers"].items() if st]
        med = [row["peers"][p]["median"] * scale for p in names]
        lo = [m - row["peers"][p]["min"] * scale for m, p in zip(med, names)]
        hi = [row["peers"][p]["max"] * scale - m for m, p in zip(med, names)]
        x = range(len(names))
        ax.bar(x, med, yerr=[lo, hi], capsize=3, color=[colors[p] for p in names])
        ax.set_xticks(list(x), [PEER_LABEL[p] for p in names], rotation=35, ha="right",
                      fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel(unit)
        for xi, m, h in zip(x, med, hi):   # above the error bar
            ax.annotate(f"{m:.3g}", (xi, m + h), ha="center", va="bottom", fontsize=7,
                        xytext=(0, 1), textcoords="offset points")
        if row["floor"]:
            f = row["floor"]["median"] * scale
            label = floor_label or f"C floor {f:.3g}"
            if f <= 3 * max(med):
                ax.axhline(f, color=colors["C floor"], ls="--", lw=1)
                ax.annotate(label, (-0.45, f), ha="left", va="bottom", fontsize=7,
                            xytext=(0, 2), textcoords="offset points",
                            bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none"))
            else:
                ax.set_title(f"{title}\n{label} (off scale)", fontsize=9)
        if row.get("local_floor") and rid_is_not_w1(row):
            f = row["local_floor"]["median"] * scale
            if f <= 3 * max(med):
                ax.axhline(f, color=colors["C floor"], ls=":", lw=1)
                ax.annotate(f"C AF_UNIX floor {f:.3g} (rlink-local's)", (len(names) - 0.55, f),
                            ha="right", va="bottom", fontsize=7, xytext=(0, 2),
                            textcoords="offset points",
                            bbox=dict(boxstyle="square,pad=0.1", fc="white", ec="none"))

    panels = [(rid, t, s, u) for rid, t, s, u in [
        ("W1", "W1 step messages 1→1 (msg/s, ↑)", 1e-3, "k msg/s"),
        ("W2", "W2 trajectories 1→1 (GB/s, ↑)", 1, "GB/s"),
        ("W2x2", "W2 trajectories 2→1 (GB/s, ↑)", 1, "GB/s"),
        ("W3", "W3 64 MiB → 2 actors (ms, ↓)", 1e3, "ms per broadcast")] if rid in rows]
    if panels:
        fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 4.2))
        axes = axes if len(panels) > 1 else [axes]
        for ax, (rid, title, scale, unit) in zip(axes, panels):
            fl = rows[rid]["floor"]
            label = None
            if rid == "W1" and fl:
                label = f"C floor (100 B, 64 per writev) {fl['median'] / 1e6:.1f}M msg/s"
            elif rid == "W3" and fl:
                label = f"C floor {fl['median'] * 1e3:.0f} ms"
            bars(ax, rows[rid], title, scale, unit, label)
            if rid == "W3":
                ax.set_yscale("log")
        fig.suptitle("rlink benchmarks: " + subtitle, fontsize=8)
        fig.tight_layout()
        p = os.path.join(out_dir, "throughput.png")
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)

    if "W4 p50" in rows:
        fig, ax = plt.subplots(figsize=(7, 4.2))
        grid = [i / 200 for i in range(201)]
        for peer, st in rows["W4 p50"]["peers"].items():
            rr = [r for r in results["runs"] if r["case"] == "W4" and r["peer"] == peer]
            if not rr:
                continue
            r = sorted(rr, key=lambda r: r["p50_us"])[len(rr) // 2]   # the median repeat
            ax.plot(r["quantiles_us"], grid, label=f"{PEER_LABEL[peer]} (p50 {r['p50_us']:.0f} µs)",
                    color=colors[peer])
        for name, label, ls in (("tcp_pingpong_64B", "C TCP ping-pong 64 B", "--"),
                                ("unix_pingpong_64B", "C AF_UNIX ping-pong 64 B", ":")):
            pp = [r for r in results["floor_runs"] if r["name"] == name]
            if pp:
                r = sorted(pp, key=lambda r: r["p50_us"])[len(pp) // 2]
                ax.plot(r["quantiles_us"], grid, label=f"{label} (p50 {r['p50_us']:.0f} µs)",
                        color=colors["C floor"], ls=ls)
        ax.set_xscale("log")
        ax.set_xlabel("round-trip time (µs, log scale)")
        ax.set_ylabel("fraction of round trips")
        ax.set_title("W4 round trip latency CDF (median repeat)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        fig.suptitle(subtitle, fontsize=7)
        fig.tight_layout()
        p = os.path.join(out_dir, "latency_cdf.png")
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)

    sc = results["scaling"]
    if sc and any(len(v) > 1 for v in sc.values()):
        fig, ax = plt.subplots(figsize=(6, 4.2))
        for peer, pts in sc.items():
            ks = sorted(pts, key=int)
            med = [pts[k]["median"] / 1e3 for k in ks]
            err = [[m - pts[k]["min"] / 1e3 for m, k in zip(med, ks)],
                   [pts[k]["max"] / 1e3 - m for m, k in zip(med, ks)]]
            ax.errorbar([int(k) for k in ks], med, yerr=err, marker="o", capsize=3,
                        label=PEER_LABEL[peer], color=colors[peer])
        ax.set_xscale("log", base=2)
        ax.set_xticks([1, 4, 16, 64], ["1", "4", "16", "64"])
        ax.set_xlabel("actor processes → 1 learner")
        ax.set_ylabel("k msg/s at the learner")
        ax.set_ylim(bottom=0)
        ax.set_title(f"W1 scaling ({info['nproc']} cores for all processes)", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        fig.suptitle(subtitle, fontsize=7)
        fig.tight_layout()
        p = os.path.join(out_dir, "scaling.png")
        fig.savefig(p, dpi=90)
        plt.close(fig)
        paths.append(p)
    return paths


def main(argv=None):
    """python -m benchmarks.report RESULTS.json [OUT_DIR]: rewrite results.md
    and the plots from a results.json."""
    import sys
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        print(main.__doc__)
        return 2
    with open(argv[0]) as f:
        results = json.load(f)
    out = argv[1] if len(argv) > 1 else os.path.dirname(os.path.abspath(argv[0]))
    os.makedirs(out, exist_ok=True)
    with open(os.path.join(out, "results.md"), "w") as f:
        f.write(markdown(results) + "\n")
    for p in plot_all(results, out):
        print(p)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
