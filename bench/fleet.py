#!/usr/bin/env python3
"""The fleet benchmark: remedy, Ansible and a bare russh floor, on N real sshd hosts.

Starts N OpenSSH servers on loopback (127.0.1.1 .. 127.0.1.N, key-only, their own config and host
keys, PIDs recorded), writes an inventory for remedy and one for Ansible, and runs the same
five-command workload with each tool (bench/workload/): read a file, a pipe, write a file under a
per-host directory using what was read, a stat of it, and a command that runs only when the stat
says the file is not empty. Runs are interleaved (floor, remedy, ansible, then again) so machine
noise hits every tool alike; each run starts with no SSH connection open. Reports medians with
min-max, the client's CPU (user+sys of its whole process tree), the servers' CPU, and the
client's peak RSS (its largest process), as a Markdown table in bench/results/.

Needs root (sshd, port 22 on 127.0.1.x, cgroups), openssh-server, and a release build (the
script builds it). Ansible comes from a venv with ansible-core from PyPI (--ansible-venv; made if
missing); without it the Ansible rows are skipped with a note.

  bench/fleet.py                          # 10, 50 and 200 hosts, 3 runs each
  bench/fleet.py --hosts 200 --runs 5 --tools floor,remedy
  bench/fleet.py --hosts 3 --runs 1 --tools floor,remedy --port 2299 --no-build \
      --bin-dir target/debug --work /tmp/w --out /tmp/w.md      # the smoke run of tests/lab
"""

import argparse
import datetime
import json
import os
import resource
import shutil
import shlex
import signal
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORKLOAD = ROOT / "bench" / "workload"
CGROUP = Path("/sys/fs/cgroup/cpuacct")
SSHD = shutil.which("sshd") or "/usr/sbin/sshd"


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


class NoGroup:
    """No cgroup: `measured` then counts the CPU of the one process it waits for."""

    ok = False

    def usage(self):
        return None


class CpuGroup:
    """A cpuacct cgroup (v1) whose processes' CPU time is counted, children included, even
    processes that detach (Ansible's ControlPersist masters). Falls back to rusage of waited
    children where cgroups cannot be made."""

    def __init__(self, name):
        self.path = CGROUP / f"remedy-bench-{os.getpid()}" / name
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            self.ok = (self.path / "cgroup.procs").exists()
        except OSError:
            self.ok = False

    def usage(self):
        if not self.ok:
            return None
        return int((self.path / "cpuacct.usage").read_text()) / 1e9

    def add(self, pid):
        if self.ok:
            (self.path / "cgroup.procs").write_text(str(pid))

    def remove(self):
        if not self.ok:
            return
        for _ in range(50):
            try:
                self.path.rmdir()
                return
            except OSError:
                time.sleep(0.1)


class Fleet:
    """N sshd processes on 127.0.1.x, each with its own directory under `work`."""

    def __init__(self, work, n, port):
        self.work, self.n, self.port = work, n, port
        self.pids = []
        self.hosts = []  # (name, address, fingerprint)

    def start(self, client_pub, server_cg):
        Path("/run/sshd").mkdir(exist_ok=True)
        # A stock home, so that commands pay what they pay on a real host: root's own rc files
        # on this machine (pyenv) would be run by bash for every command.
        home = self.work / "home"
        home.mkdir(exist_ok=True)
        for f in (".bashrc", ".profile"):
            if Path("/etc/skel", f).exists():
                shutil.copy(Path("/etc/skel", f), home / f)
        for i in range(1, self.n + 1):
            name, addr = f"h{i:03d}", f"127.0.1.{i}" if i < 255 else None
            if addr is None:
                raise SystemExit("at most 254 hosts on 127.0.1.x")
            d = self.work / "hosts" / name
            d.mkdir(parents=True, exist_ok=True)
            key = d / "ssh_host_ed25519_key"
            if not key.exists():
                run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
            fp = run(["ssh-keygen", "-l", "-E", "sha256", "-f", str(key) + ".pub"]).stdout.split()[1]
            (d / "authorized_keys").write_text(client_pub)
            (d / "sshd_config").write_text(
                f"ListenAddress {addr}\nPort {self.port}\nHostKey {key}\n"
                f"AuthorizedKeysFile {d}/authorized_keys\nPidFile {d}/sshd.pid\n"
                "PermitRootLogin prohibit-password\nPasswordAuthentication no\n"
                "KbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\nUseDNS no\n"
                "PrintMotd no\nPrintLastLog no\nMaxStartups 200:30:400\nMaxSessions 20\n"
                f"LogLevel ERROR\nSetEnv HOME={home}\n"
            )
            p = subprocess.Popen(
                [SSHD, "-D", "-f", str(d / "sshd_config"), "-E", str(d / "sshd.log")],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            self.pids.append(p)
            server_cg.add(p.pid)
            self.hosts.append((name, addr, fp))
        (self.work / "sshd.pids").write_text("".join(f"{p.pid}\n" for p in self.pids))
        self.wait_listening()

    def wait_listening(self):
        import socket

        deadline = time.time() + 30
        for p, (name, addr, _) in zip(self.pids, self.hosts):
            while True:
                if p.poll() is not None:
                    raise SystemExit(f"sshd for {name} exited: " + (self.work / "hosts" / name / "sshd.log").read_text())
                try:
                    socket.create_connection((addr, self.port), timeout=1).close()
                    break
                except OSError:
                    if time.time() > deadline:
                        raise SystemExit(f"sshd for {name} does not listen on {addr}:{self.port}")
                    time.sleep(0.02)

    def stop(self):
        for p in self.pids:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.pids:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.pids = []


def write_inputs(work, fleet, key):
    """The floor's host list, remedy's inventory, Ansible's inventory and config."""
    (work / "hosts.txt").write_text(
        "".join(f"{n} {a} {fleet.port} {fp}\n" for n, a, fp in fleet.hosts)
    )
    lines = ["all:", "  children:", "    fleet:", "      vars:", "        ansible_user: root",
             f"        ansible_port: {fleet.port}", f"        ansible_ssh_private_key_file: {key}",
             "        remedy_host_key_policy: pinned", "      hosts:"]
    for n, a, fp in fleet.hosts:
        lines += [f"        {n}:", f"          ansible_host: {a}",
                  f"          remedy_host_key_fingerprint: \"{fp}\""]
    (work / "remedy-inventory.yml").write_text("\n".join(lines) + "\n")
    known = []
    for n, a, _ in fleet.hosts:
        pub = (work / "hosts" / n / "ssh_host_ed25519_key.pub").read_text().split()
        known.append(f"{a} {pub[0]} {pub[1]}\n")
    (work / "known_hosts").write_text("".join(known))
    (work / "ansible-inventory.ini").write_text(
        "[fleet]\n" + "".join(f"{n} ansible_host={a}\n" for n, a, _ in fleet.hosts)
        + "\n[fleet:vars]\nansible_user=root\n"
        f"ansible_port={fleet.port}\nansible_ssh_private_key_file={key}\n"
        "ansible_python_interpreter=/usr/bin/python3\n"
    )
    (work / "ansible.cfg").write_text(
        "[defaults]\nforks = 50\ngathering = explicit\nhost_key_checking = True\n"
        "retry_files_enabled = False\ninterpreter_python = /usr/bin/python3\n"
        f"local_tmp = {work}/ansible-local\n"
        "[ssh_connection]\npipelining = True\n"
        f"ssh_args = -o ControlMaster=auto -o ControlPersist=60s -o UserKnownHostsFile={work}/known_hosts\n"
        f"control_path_dir = {work}/cp\n"
    )


def hwm_kb(pid):
    """A process's peak RSS so far (VmHWM), in KiB; 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


class PeakRss(threading.Thread):
    """Samples the peak RSS (VmHWM) of the largest process in the client's tree every 10 ms.
    (rusage's ru_maxrss cannot be used: it keeps the peak of the Python process that forked the
    client, from before its exec.)"""

    def __init__(self, pid, cg):
        super().__init__(daemon=True)
        self.pid, self.cg, self.peak, self.done = pid, cg, 0, threading.Event()

    def pids(self):
        if self.cg.ok:
            try:
                return (self.cg.path / "cgroup.procs").read_text().split()
            except OSError:
                return []
        return [self.pid]

    def run(self):
        while not self.done.is_set():
            for pid in self.pids():
                self.peak = max(self.peak, hwm_kb(pid))
            self.done.wait(0.01)


def measured(cmd, cg, env=None, wrap=()):
    """Runs `cmd` in the client cgroup; returns (rc, wall s, client CPU s, peak RSS MB, output)."""
    before = cg.usage()
    started = time.perf_counter()
    p = subprocess.Popen(
        ["/bin/sh", "-c", f'echo $$ > {cg.path}/cgroup.procs; exec "$@"', "sh", *wrap, *cmd]
        if cg.ok else [*wrap, *cmd],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )
    rss = PeakRss(p.pid, cg)
    rss.start()
    out = p.stdout.read()
    # Sample once more just before reaping: the process is a zombie only after its output ends.
    rss.peak = max(rss.peak, hwm_kb(p.pid))
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.perf_counter() - started
    rss.done.set()
    rss.join()
    after = cg.usage()
    cpu = (after - before) if cg.ok else ru.ru_utime + ru.ru_stime
    return os.waitstatus_to_exitcode(status), wall, cpu, rss.peak / 1024, out.decode(errors="replace")


def stop_control_masters(work):
    """Ansible's ControlPersist masters for this run: ours, found by their control path."""
    cp = str(work / "cp")
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if "ssh" in cmdline and cp in cmdline:
            try:
                os.kill(int(pid), signal.SIGTERM)
            except ProcessLookupError:
                pass
    shutil.rmtree(work / "cp", ignore_errors=True)


def check_outputs(out_dir, fleet):
    missing = [n for n, _, _ in fleet.hosts if not (out_dir / n / "state").is_file()]
    if missing:
        raise SystemExit(f"workload did not write {len(missing)} host file(s), e.g. {missing[:3]}")


def ensure_ansible(venv, build):
    exe = venv / "bin" / "ansible-playbook"
    if exe.exists():
        return exe
    if not build:
        return None
    log(f"installing ansible-core into {venv}")
    try:
        run([sys.executable, "-m", "venv", str(venv)])
        run([str(venv / "bin" / "pip"), "install", "-q", "ansible-core"])
    except subprocess.CalledProcessError as e:
        log(f"ansible-core could not be installed: {e.stderr.strip()[-300:]}")
        return None
    return exe if exe.exists() else None


def fmt(values, digits=2):
    if not values:
        return "-"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}f}"
    return f"{med:.{digits}f} [{min(values):.{digits}f}-{max(values):.{digits}f}]"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", default="10,50,200", help="fleet sizes, comma-separated")
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--ansible-runs", type=int, help="runs of Ansible (default: --runs)")
    ap.add_argument("--tools", default="floor,remedy,plan,ansible",
                    help="floor, remedy (apply), plan (remedy plan: the dry-run), ansible")
    ap.add_argument("--concurrency", type=int, default=100, help="floor's and remedy's (--forks)")
    ap.add_argument("--port", type=int, default=22)
    ap.add_argument("--work", default="/var/tmp/remedy-bench")
    ap.add_argument("--ansible-venv", default="/var/tmp/remedy-bench-ansible")
    ap.add_argument("--no-build", action="store_true", help="use the binaries already in target/release")
    ap.add_argument("--bin-dir", default=str(ROOT / "target" / "release"),
                    help="where remedy and ssh-floor are (with --no-build)")
    ap.add_argument("--wrap", metavar="CMD", help="run remedy and the floor under CMD, for "
                    "profiling; {tool}, {hosts} and {run} are filled in, e.g. --wrap 'perf record "
                    "-e cpu-clock -g -o /tmp/{tool}-{hosts}-{run}.data --' or 'strace -f -c -o "
                    "/tmp/{tool}.strace'. Its CPU and memory count in the figures.")
    ap.add_argument("--out", help="Markdown file (default: bench/results/fleet-DATE.md)")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("the fleet benchmark needs root (sshd on port 22 of 127.0.1.x, cgroups)")
    tools = args.tools.split(",")
    sizes = [int(n) for n in args.hosts.split(",")]
    remedy, floor = binaries(args)
    ansible = None
    notes = []
    if "ansible" in tools:
        ansible = ensure_ansible(Path(args.ansible_venv), not args.no_build)
        if ansible is None:
            tools.remove("ansible")
            notes.append("Ansible skipped: ansible-core is not installed and could not be installed.")

    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    key = work / "id_ed25519"
    run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)])
    client_pub = (work / "id_ed25519.pub").read_text()
    server_cg, client_cg = CpuGroup("server"), CpuGroup("client")
    if not client_cg.ok:
        notes.append("No cpuacct cgroup: client CPU is rusage of waited processes, server CPU not measured.")

    rows = []
    fleet = None
    try:
        for n in sizes:
            fleet = Fleet(work, n, args.port)
            log(f"starting {n} sshd hosts")
            fleet.start(client_pub, server_cg)
            write_inputs(work, fleet, key)
            results = {t: [] for t in tools}
            out_dir = work / "out"
            runs = {t: (args.ansible_runs or args.runs) if t == "ansible" else args.runs for t in tools}
            for r in range(max(runs.values())):
                for tool in tools:
                    if r >= runs[tool]:
                        continue
                    shutil.rmtree(out_dir, ignore_errors=True)
                    # remedy's state directory (its lock files) stays, as on a controller.
                    state = work / "state"
                    audit = work / "audit.jsonl"
                    for f in (audit, Path(str(audit) + ".head")):
                        f.unlink(missing_ok=True)
                    env = dict(os.environ, HOME=str(work / "home"))
                    if tool == "floor":
                        cmd = [str(floor), "--hosts", str(work / "hosts.txt"), "--key", str(key),
                               "--out-dir", str(out_dir), "--concurrency", str(args.concurrency)]
                    elif tool == "remedy":
                        cmd = [str(remedy), "apply", str(WORKLOAD / "fleet.yml"),
                               "-i", str(work / "remedy-inventory.yml"), "-e", f"out_dir={out_dir}",
                               "--yes", "--forks", str(args.concurrency),
                               "--audit-log", str(audit), "--state-dir", str(state)]
                        env["NO_COLOR"] = "1"
                    elif tool == "plan":
                        # `remedy plan`: a dry-run of the same playbook, written as a plan file.
                        cmd = [str(remedy), "plan", str(WORKLOAD / "fleet.yml"),
                               "-i", str(work / "remedy-inventory.yml"), "-e", f"out_dir={out_dir}",
                               "-o", str(work / "fleet.plan.json"), "--forks", str(args.concurrency),
                               "--audit-log", str(audit)]
                        env["NO_COLOR"] = "1"
                    else:
                        cmd = [str(ansible), "-i", str(work / "ansible-inventory.ini"),
                               str(WORKLOAD / "fleet-ansible.yml"), "-e", f"out_dir={out_dir}"]
                        env["ANSIBLE_CONFIG"] = str(work / "ansible.cfg")
                    s_before = server_cg.usage()
                    wrap = ()
                    if args.wrap and tool != "ansible":
                        wrap = shlex.split(args.wrap.format(tool=tool, hosts=n, run=r + 1))
                    rc, wall, cpu, rss, out = measured(cmd, client_cg, env, wrap)
                    s_after = server_cg.usage()
                    if tool == "ansible":
                        stop_control_masters(work)
                    if rc != 0:
                        raise SystemExit(f"{tool} at {n} hosts exited {rc}:\n{out[-3000:]}")
                    if tool == "plan":
                        # A dry-run writes nothing on the hosts.
                        if out_dir.exists():
                            raise SystemExit(f"remedy plan at {n} hosts wrote {out_dir}")
                        planned = json.loads((work / "fleet.plan.json").read_text())["plan"]
                        if len(planned["targets"]) != n:
                            raise SystemExit(f"the plan at {n} hosts lists "
                                             f"{len(planned['targets'])} targets")
                    else:
                        check_outputs(out_dir, fleet)
                    if tool in ("remedy", "plan"):
                        v = subprocess.run([str(remedy), "audit", "verify", "--audit-log", str(audit)],
                                           capture_output=True, text=True)
                        if v.returncode != 0:
                            raise SystemExit(f"audit log does not verify: {v.stdout}{v.stderr}")
                    server = (s_after - s_before) if server_cg.ok else None
                    results[tool].append((wall, cpu, rss, server))
                    log(f"  {n:4d} hosts  {tool:7s} run {r + 1}: {wall:7.2f} s wall, "
                        f"{cpu:6.2f} s client CPU, {rss:6.1f} MB peak RSS"
                        + (f", {server:6.2f} s server CPU" if server is not None else ""))
            fleet.stop()
            fleet = None
            rows.append((n, results))
    finally:
        if fleet is not None:
            fleet.stop()
        stop_control_masters(work)
        server_cg.remove()
        client_cg.remove()
        try:
            (CGROUP / f"remedy-bench-{os.getpid()}").rmdir()
        except OSError:
            pass

    write_report(args, rows, notes, remedy, ansible)
    shutil.rmtree(work, ignore_errors=True)


def version(cmd):
    try:
        p = subprocess.run(cmd, capture_output=True, text=True)
        return (p.stdout or p.stderr).strip().splitlines()[0]
    except (OSError, IndexError):
        return "?"


def binaries(args):
    """remedy and ssh-floor: built in release mode first unless --no-build, then taken from
    --bin-dir."""
    if not args.no_build:
        log("building remedy and ssh-floor (release)")
        subprocess.run(["cargo", "build", "--release", "--locked", "-q", "-p", "remedy",
                        "-p", "remedy-tests", "--bin", "remedy", "--bin", "ssh-floor"],
                       cwd=ROOT, check=True)
    return Path(args.bin_dir) / "remedy", Path(args.bin_dir) / "ssh-floor"


def setting(remedy):
    """What was measured on: remedy's version and commit, the cores, the kernel."""
    commit = version(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"])
    return (f"remedy {version([str(remedy), '--version'])} (commit {commit}), "
            f"{os.cpu_count()} cores, kernel {os.uname().release}")


def write_report(args, rows, notes, remedy, ansible):
    now = datetime.datetime.now(datetime.timezone.utc)
    lines = [
        f"# Fleet benchmark, {now:%Y-%m-%d %H:%M} UTC",
        "",
        f"{setting(remedy)}, {version([SSHD, '-V'])}"
        + (f", {version([str(ansible), '--version'])}" if ansible else "") + ".",
        f"Workload: bench/workload/ (5 commands per host). Runs: {args.runs}"
        + (f" (Ansible {args.ansible_runs})" if args.ansible_runs else "")
        + f", interleaved; median [min-max]. Floor and remedy at concurrency {args.concurrency}; "
        "Ansible forks 50 + pipelining + ControlPersist. remedy with its audit log on.",
        "",
        "| hosts | tool | wall s | client CPU s | peak RSS MB | server CPU s |",
        "|---:|---|---:|---:|---:|---:|",
    ]
    ratios = []
    for n, results in rows:
        for tool, rs in results.items():
            if not rs:
                continue
            server = [r[3] for r in rs if r[3] is not None]
            lines.append(f"| {n} | {tool} | {fmt([r[0] for r in rs])} | {fmt([r[1] for r in rs])} "
                         f"| {fmt([r[2] for r in rs], 1)} | {fmt(server)} |")
        med = {t: (statistics.median(r[0] for r in rs), statistics.median(r[1] for r in rs))
               for t, rs in results.items() if rs}
        if "floor" in med and "remedy" in med:
            ratios.append(f"- {n} hosts: remedy / floor wall {med['remedy'][0] / med['floor'][0]:.2f}x, "
                          f"client CPU {med['remedy'][1] / med['floor'][1]:.2f}x")
        if "plan" in med:
            wall, cpu = med["plan"]
            ratios.append(f"- {n} hosts: remedy plan (dry-run) used {cpu:.2f} s of CPU in {wall:.2f} s, "
                          f"{100 * cpu / wall:.1f}% (an upper bound of its time outside the network)")
        if "ansible" in med and "remedy" in med:
            ratios.append(f"- {n} hosts: ansible / remedy wall {med['ansible'][0] / med['remedy'][0]:.1f}x, "
                          f"client CPU {med['ansible'][1] / med['remedy'][1]:.1f}x")
    lines += ["", "Ratios of the medians:", ""] + ratios
    if notes:
        lines += ["", "Notes:", ""] + [f"- {n}" for n in notes]
    publish(lines, args.out, f"fleet-{now:%Y%m%d-%H%M}.md")


def publish(lines, out, default_name):
    """Writes the Markdown report to `out` (default bench/results/DEFAULT_NAME) and prints it."""
    text = "\n".join(lines) + "\n"
    out = Path(out) if out else ROOT / "bench" / "results" / default_name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    print(text)
    log(f"written to {out}")


if __name__ == "__main__":
    main()
