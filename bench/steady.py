#!/usr/bin/env python3
"""Steady-state detection with warm and with cold SSH connections, on the simulated zone.

The zone of bench/simzone.py (HOSTS hypervisors, 2 x VPCS routers on the first JUMPS) runs in its
own process (`remedy lab`). `remedy daemon` runs one job: a detection-only playbook reading every
router (through its hypervisor) every EVERY seconds. It runs twice on the same zone: with its
warm connection pool (the default), then with `REMEDY_SSH_POOL_MAX=0` (each run opens its own
connections and closes them at its end, as `remedy apply` does). For each, after the first run
(which connects), CPU of the daemon and of the simulator is measured over DURATION seconds and
divided by the runs in that time (`remedy_job_runs_total` on /metrics). Writes a Markdown table
with the warm/cold ratio to bench/results/.

  bench/steady.py                                            # 1,000 hypervisors, 100 routers, 10 s, 5 min
  bench/steady.py --hosts 50 --vpcs 5 --jumps 2 --every 2 --duration 20 --no-build   # smoke run
"""

import argparse
import datetime
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import binaries, log, setting  # noqa: E402
from simzone import cpu_s, free_port, fresh_lab  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent

PLAYBOOK = """name: bench-steady-detect
description: reads every router's hostname; never applies (the steady-state benchmark)
detect:
  - id: probe
    on: routers
    ssh: hostname
    changes: none
applies_when: "false"
steps:
  - id: nothing
    on: routers
    ssh: "true"
    no_rollback: never runs
"""


def metric(port, name):
    """The sum of a metric's samples on the daemon's /metrics (0 when absent)."""
    try:
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read()
    except OSError:
        return 0.0
    total = 0.0
    for line in text.decode().splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def wait_runs(port, n, timeout):
    deadline = time.time() + timeout
    while metric(port, "remedy_job_runs_total") < n:
        if time.time() > deadline:
            raise SystemExit(f"the daemon did not complete {n} run(s) within {timeout} s")
        time.sleep(0.2)


def measure(remedy, lab, work, jobs, mode, args):
    """One daemon (warm or cold): CPU per steady-state run of the daemon and the simulator."""
    state = work / f"state-{mode}"
    shutil.rmtree(state, ignore_errors=True)
    port = free_port()
    env = dict(os.environ)
    if mode == "cold":
        env["REMEDY_SSH_POOL_MAX"] = "0"
    daemon = subprocess.Popen(
        [str(remedy), "daemon", "--jobs", str(jobs), "--state-dir", str(state),
         "--audit-log", str(work / f"audit-{mode}.jsonl"), "--listen", f"127.0.0.1:{port}"],
        env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=open(work / f"daemon-{mode}.log", "w"),
    )
    try:
        wait_runs(port, 1, 300)
        runs0 = metric(port, "remedy_job_runs_total")
        d0, s0 = cpu_s(daemon.pid), cpu_s(lab.proc.pid)
        opened0 = metric(port, "remedy_ssh_pool_connections_opened_total")
        time.sleep(args.duration)
        runs1 = metric(port, "remedy_job_runs_total")
        d1, s1 = cpu_s(daemon.pid), cpu_s(lab.proc.pid)
        opened1 = metric(port, "remedy_ssh_pool_connections_opened_total")
        failures = metric(port, "remedy_job_failures_total")
    finally:
        daemon.send_signal(signal.SIGTERM)
        try:
            daemon.wait(timeout=60)
        except subprocess.TimeoutExpired:
            daemon.kill()
            daemon.wait()
    runs = runs1 - runs0
    if runs <= 0:
        raise SystemExit(f"{mode}: no run completed in {args.duration} s")
    row = {
        "runs": int(runs),
        "daemon": (d1 - d0) / runs,
        "sim": (s1 - s0) / runs,
        "opened": opened1 - opened0,
        "failures": int(failures),
    }
    log(f"  {mode}: {row['runs']} runs, {row['daemon']:.3f} s daemon CPU/run, "
        f"{row['sim']:.3f} s simulator CPU/run, {row['opened']:.0f} connections opened "
        f"after the first run, {row['failures']} failed runs")
    return row


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=1000, help="hypervisors")
    ap.add_argument("--vpcs", type=int, default=50, help="redundant VPCs (2 routers each)")
    ap.add_argument("--jumps", type=int, default=10, help="hypervisors the routers run on")
    ap.add_argument("--every", type=int, default=10, help="seconds between detections")
    ap.add_argument("--duration", type=int, default=300, help="seconds measured per mode")
    ap.add_argument("--work", default="/var/tmp/remedy-bench-steady")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", default=str(ROOT / "target" / "release"),
                    help="where remedy is (default: target/release)")
    ap.add_argument("--out", help="Markdown file (default: bench/results/steady-DATE.md)")
    args = ap.parse_args()
    args.wrap = None
    remedy, _ = binaries(args)
    work, lab = fresh_lab(remedy, args)
    playbook = work / "steady.yml"
    playbook.write_text(PLAYBOOK)
    try:
        jobs = work / "jobs.yml"
        jobs.write_text(
            "jobs:\n  - name: steady\n"
            f"    playbook: {playbook}\n    inventory: {lab.inventory}\n"
            f"    every: {args.every}s\n    mode: detect\n"
        )
        rows = {}
        for mode in ("warm", "cold"):
            log(f"{mode} connections: {args.duration} s of detection every {args.every} s")
            rows[mode] = measure(remedy, lab, work, jobs, mode, args)
    finally:
        lab.stop()
    write_report(args, rows, remedy)
    shutil.rmtree(work, ignore_errors=True)


def write_report(args, rows, remedy):
    now = datetime.datetime.now(datetime.timezone.utc)
    out = Path(args.out or ROOT / "bench" / "results" / f"steady-{now:%Y%m%d-%H%M}.md")
    w, c = rows["warm"], rows["cold"]
    total = {m: r["daemon"] + r["sim"] for m, r in rows.items()}
    lines = [
        f"# Steady-state detection, warm vs cold SSH connections ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"{setting(remedy)}. Zone: {args.hosts} hypervisors, {2 * args.vpcs} routers on the "
        f"first {args.jumps} (`remedy lab`). `remedy daemon`, one job reading every router's "
        f"hostname through its hypervisor every {args.every} s (bench/steady.py), measured for "
        f"{args.duration} s after its first run; cold: `REMEDY_SSH_POOL_MAX=0`.",
        "",
        "| connections | runs | daemon CPU/run (s) | simulator CPU/run (s) | total CPU/run (s) "
        "| connections opened after the first run | failed runs |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode, r in rows.items():
        opened = f"{r['opened']:.0f}" if mode == "warm" else "(all, every run)"
        lines.append(f"| {mode} | {r['runs']} | {r['daemon']:.3f} | {r['sim']:.3f} "
                     f"| {total[mode]:.3f} | {opened} | {r['failures']} |")
    ratio = total["warm"] / total["cold"] if total["cold"] else float("nan")
    lines += ["", f"Warm / cold, controller + simulator CPU per run: **{ratio:.2f}x** "
              f"(daemon {w['daemon'] / c['daemon'] if c['daemon'] else float('nan'):.2f}x, "
              f"simulator {w['sim'] / c['sim'] if c['sim'] else float('nan'):.2f}x).", ""]
    out.write_text("\n".join(lines))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
