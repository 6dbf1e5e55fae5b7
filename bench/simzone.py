#!/usr/bin/env python3
"""The simulated-zone benchmark: remedy against 1,000 simulated hypervisors and 100 routers.

Writes a scenario (bench/results/ says which) with HOSTS hypervisors and VPCS redundant VPCs whose
2 x VPCS routers run on the first JUMPS hypervisors, every machine with a log file in the wrong
mode; starts the simulator in its own process (`remedy lab`, API and SSH hosts on loopback, an
inventory whose machines come from its API, routers reached through their hypervisor); then runs the
workload (bench/workload/sim-fleet.yml: five steps per machine, one of them a `file` fix) with
`remedy apply`, and `--dry-run`, on a fresh zone each run; and the same commands with the floor
(tests/src/bin/ssh-floor.rs `--workload sim`: plain russh, one connection per machine, routers
through their hypervisor's connection, none of remedy's engine). Measures each client's wall
time, CPU and peak RSS, and the simulator's CPU over the same run, so the three can be compared.
Also times `remedy validate` on every shipped playbook. Writes a Markdown table to bench/results/.

  bench/simzone.py                       # 1,000 hypervisors, 100 routers behind 10, 3 runs
  bench/simzone.py --hosts 50 --vpcs 5 --jumps 2 --runs 1 --no-build   # smoke run
"""

import argparse
import base64
import datetime
import hashlib
import json
import os
import re
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import NoGroup, binaries, fmt, log, measured, publish, setting  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "bench" / "workload" / "sim-fleet.yml"
FIRST_ROUTER = 930  # the simulator's first instance number when VPCs have no guest VMs
BENCH_FILE = "/var/log/remedy-bench.log"


def scenario(hosts, vpcs, jumps):
    names = [f"kvm{i:04d}" for i in range(1, hosts + 1)]
    lines = [
        "name: bench-sim-fleet",
        f"description: {hosts} hypervisors, {2 * vpcs} routers on the first {jumps}, "
        f"{BENCH_FILE} in mode 0600 on every one",
        'guest_vlan: "1000-1999"',
        "hosts: [" + ", ".join(names) + "]",
        "vpcs:",
    ]
    for v in range(vpcs):
        a, b = names[(2 * v) % jumps], names[(2 * v + 1) % jumps]
        lines.append(f"  - {{ name: vpc{v + 1:03d}, tiers: [t], vms_per_tier: 0, "
                     f"router_hosts: [{a}, {b}] }}")
    machines = names + [f"r-{FIRST_ROUTER + r}-VM" for r in range(2 * vpcs)]
    lines.append("guest:")
    for m in machines:
        lines.append(f"  {m}: {{ files: {{ {BENCH_FILE}: "
                     "{ mode: \"0600\", owner: root, group: root, content: \"x\" } } }")
    return "\n".join(lines) + "\n"


def cpu_s(pid):
    """utime + stime of a live process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Lab:
    """`remedy lab` with the bench scenario: the simulator, in its own process."""

    def __init__(self, remedy, work, scen):
        self.inventory = work / "inventory.yml"
        self.inventory.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [str(remedy), "lab", "--scenario", str(scen), "--listen", f"127.0.0.1:{free_port()}",
             "--write-inventory", str(self.inventory)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        )
        deadline = time.time() + 120
        # The lab prints its endpoints once the zone and the inventory are ready.
        seen = b""
        while b"inventory" not in seen:
            line = self.proc.stdout.readline()
            if not line or time.time() > deadline:
                self.stop()
                raise SystemExit("remedy lab did not start:\n" + seen.decode(errors="replace"))
            seen += line
        self.started = seen.decode(errors="replace")

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def fresh_lab(remedy, args):
    """A fresh work directory (args.work) and a lab running the zone of args.hosts hypervisors,
    args.vpcs VPCs on the first args.jumps: (work, lab)."""
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    scen = work / "scenario.yml"
    scen.write_text(scenario(args.hosts, args.vpcs, args.jumps))
    return work, Lab(remedy, work, scen)


def floor_hosts(remedy, inventory, out):
    """The floor's host list (hypervisors and routers, routers via their hypervisor), as
    `remedy inventory --list` resolves the inventory `remedy lab` wrote (its machines come from
    the zone's API). Each host's key: its pinned fingerprint, or else the key the lab recorded
    for its address in its own known_hosts file. Returns how many hosts it lists."""
    listed = subprocess.run([str(remedy), "inventory", "-i", str(inventory), "--list"],
                            capture_output=True, text=True)
    if listed.returncode != 0:
        raise SystemExit(f"remedy inventory --list exited {listed.returncode}:\n{listed.stderr}")
    inv = json.loads(listed.stdout)
    known = {}
    for line in Path(f"{inventory}.known_hosts").read_text().splitlines():
        fields = line.split()
        if len(fields) >= 3 and not line.startswith("#"):
            digest = hashlib.sha256(base64.b64decode(fields[2])).digest()
            known[fields[0]] = "SHA256:" + base64.b64encode(digest).decode().rstrip("=")
    lines = []
    for group in ("hypervisors", "routers"):
        for name in inv.get(group, {}).get("hosts", []):
            conn = inv["_meta"]["hostvars"][name]["remedy_connection"]
            addr, port = conn["address"], conn["port"]
            policy = conn["host_key"]
            fp = policy.split(" ", 1)[1] if policy.startswith("pinned ") \
                else known[f"[{addr}]:{port}"]
            jump = conn.get("jump", [])
            lines.append(f"{name} {addr} {port} {fp}" + (f" via={jump[-1]}" if jump else ""))
    out.write_text("\n".join(lines) + "\n")
    return len(lines)


def run_client(cmd, lab):
    """Runs one client command; returns (rc, wall, CPU s, peak RSS MB, simulator CPU s, output)."""
    sim_before = cpu_s(lab.proc.pid)
    rc, wall, cpu, rss, out = measured(cmd, NoGroup(), dict(os.environ, NO_COLOR="1"))
    return rc, wall, cpu, rss, cpu_s(lab.proc.pid) - sim_before, out


def fixes(audit, outcome):
    """How many targets the `fix` step came to `outcome` on, by the audit log."""
    n = 0
    for line in audit.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "step_end" and r.get("step") == "fix" and r.get("outcome") == outcome:
            n += 1
    return n


def validate_times(remedy, rounds):
    rows = []
    for pb in sorted((ROOT / "playbooks").glob("*.yml")):
        times = []
        for _ in range(rounds):
            t = time.perf_counter()
            p = subprocess.run([str(remedy), "validate", str(pb)], capture_output=True)
            times.append((time.perf_counter() - t) * 1000)
            if p.returncode != 0:
                raise SystemExit(f"remedy validate {pb.name} failed: {p.stdout.decode()}{p.stderr.decode()}")
        rows.append((pb.name, times))
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=1000, help="hypervisors")
    ap.add_argument("--vpcs", type=int, default=50, help="redundant VPCs (2 routers each)")
    ap.add_argument("--jumps", type=int, default=10, help="hypervisors the routers run on")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--forks", type=int, default=100)
    ap.add_argument("--validate-rounds", type=int, default=10)
    ap.add_argument("--work", default="/var/tmp/remedy-bench-sim")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--wrap", metavar="CMD", help="run remedy and the floor under CMD, for "
                    "profiling; {tool}, {mode} and {run} are filled in (see bench/fleet.py --wrap)")
    ap.add_argument("--modes", default="dry-run,apply")
    ap.add_argument("--tools", default="remedy,floor", help="remedy, floor, or both")
    ap.add_argument("--bin-dir", default=str(ROOT / "target" / "release"),
                    help="where remedy and ssh-floor are (with --no-build)")
    ap.add_argument("--out", help="Markdown file (default: bench/results/simzone-DATE.md)")
    args = ap.parse_args()
    if args.jumps > args.hosts or args.vpcs > 500:
        raise SystemExit("--jumps must not exceed --hosts; at most 500 VPCs")
    tools = args.tools.split(",")
    if not set(tools) <= {"remedy", "floor"}:
        raise SystemExit("--tools takes remedy and floor")
    remedy, floor = binaries(args)
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    scen = work / "scenario.yml"
    scen.write_text(scenario(args.hosts, args.vpcs, args.jumps))
    machines = args.hosts + 2 * args.vpcs

    modes = args.modes.split(",")
    results = {(mode, tool): [] for mode in modes for tool in tools}
    for r in range(args.runs):
        for mode in modes:
            for tool in tools:
                lab = Lab(remedy, work, scen)
                try:
                    row = (run_remedy_once if tool == "remedy" else run_floor_once)(
                        args, mode, r, lab, work, remedy, floor, machines)
                finally:
                    lab.stop()
                results[(mode, tool)].append(row)
                wall, cpu, rss, sim = row
                log(f"  {mode:8s} {tool:6s} run {r + 1}: {wall:6.2f} s wall, {cpu:5.2f} s CPU, "
                    f"{rss:6.1f} MB peak RSS, {sim:5.2f} s simulator CPU")
    log("timing remedy validate on the shipped playbooks")
    validate = validate_times(remedy, args.validate_rounds)
    write_report(args, results, validate, remedy, machines)
    shutil.rmtree(work, ignore_errors=True)


def run_remedy_once(args, mode, r, lab, work, remedy, _floor, machines):
    audit = work / "audit.jsonl"
    for f in (audit, Path(str(audit) + ".head")):
        f.unlink(missing_ok=True)
    cmd = [str(remedy), "apply", str(WORKLOAD), "-i", str(lab.inventory), "--yes",
           "--forks", str(args.forks), "--audit-log", str(audit),
           "--state-dir", str(work / "state")]
    if mode == "dry-run":
        cmd.append("--dry-run")
    if args.wrap:
        cmd = shlex.split(args.wrap.format(mode=mode, run=r + 1, tool="remedy")) + cmd
    rc, wall, cpu, rss, sim, out = run_client(cmd, lab)
    if rc != 0:
        raise SystemExit(f"remedy {mode} exited {rc}:\n{out[-4000:]}")
    want = "would_change" if mode == "dry-run" else "changed"
    fixed = fixes(audit, want)
    if fixed != machines:
        raise SystemExit(f"remedy {mode}: the fix came to {want!r} on {fixed} of "
                         f"{machines} machines:\n{out[-3000:]}")
    return wall, cpu, rss, sim


def run_floor_once(args, mode, r, lab, work, remedy, floor, machines):
    hosts = work / "floor-hosts.txt"
    listed = floor_hosts(remedy, lab.inventory, hosts)
    if listed != machines:
        raise SystemExit(f"the lab's inventory lists {listed} of {machines} machines")
    cmd = [str(floor), "--hosts", str(hosts), "--key", f"{lab.inventory}.id_ed25519",
           "--concurrency", str(args.forks), "--workload", "sim", "--path", BENCH_FILE]
    if mode == "dry-run":
        cmd.append("--dry-run")
    if args.wrap:
        cmd = shlex.split(args.wrap.format(mode=mode, run=r + 1, tool="floor")) + cmd
    rc, wall, cpu, rss, sim, out = run_client(cmd, lab)
    if rc != 0 or f'"ok":{machines},' not in out:
        raise SystemExit(f"ssh-floor {mode} exited {rc}:\n{out[-4000:]}")
    return wall, cpu, rss, sim


def ratio(a, b):
    return f"{statistics.median(a) / statistics.median(b):.2f}x" if a and b else "-"


def write_report(args, results, validate, remedy, machines):
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# Simulated-zone benchmark, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"{setting(remedy)}. Zone: {args.hosts} hypervisors and {2 * args.vpcs} routers "
        f"on {args.jumps} of them ({machines} SSH targets), simulator in its own process "
        f"(`remedy lab`). Workload: bench/workload/sim-fleet.yml, --forks {args.forks}, audit log "
        f"on; the floor (ssh-floor --workload sim) runs the same commands with concurrency "
        f"{args.forks}. {args.runs} runs, interleaved, each on a fresh zone; median [min-max].",
        "",
        "| run | client | wall s | client CPU s | client peak RSS MB | simulator CPU s |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (mode, tool), rs in results.items():
        lines.append(f"| {mode} | {tool} | {fmt([r[0] for r in rs])} | {fmt([r[1] for r in rs])} "
                     f"| {fmt([r[2] for r in rs], 1)} | {fmt([r[3] for r in rs])} |")
    lines += ["", "Ratios of medians:", "",
              "| run | client CPU / simulator CPU | remedy CPU / floor CPU | remedy wall / floor wall |",
              "|---|---:|---:|---:|"]
    for mode in dict.fromkeys(m for m, _ in results):
        rem = results.get((mode, "remedy"), [])
        flo = results.get((mode, "floor"), [])
        per_tool = ", ".join(
            f"{tool} {ratio([r[1] for r in rs], [r[3] for r in rs])}"
            for (m, tool), rs in results.items() if m == mode)
        lines.append(f"| {mode} | {per_tool} | {ratio([r[1] for r in rem], [r[1] for r in flo])} "
                     f"| {ratio([r[0] for r in rem], [r[0] for r in flo])} |")
    lines += ["", f"`remedy validate` per shipped playbook ({args.validate_rounds} rounds, whole "
              "process: start, load, compile, exit), ms:", "",
              "| playbook | median [min-max] |", "|---|---:|"]
    for name, times in validate:
        lines.append(f"| {name} | {fmt(times, 1)} |")
    publish(lines, args.out, f"simzone-{now:%Y%m%d-%H%M}.md")


if __name__ == "__main__":
    main()
