#!/usr/bin/env python3
"""Event-driven fixes on the simulated zone: alert -> verified fix, with webhooks and with polling,
and a storm of events.

The zone of bench/simzone.py (HOSTS hypervisors, 2 x VPCS routers on the first JUMPS) runs in its
own process (`remedy lab`); `remedy daemon` runs one job, `vr-backup-loop`, with no schedule of
its own: a rule starts it when the zone reports that a VPC has no PRIMARY router (a
ROUTER.HEALTH.CHECKS ERROR event), with the VPC looked up from the router.

- webhook: the zone delivers its events to the daemon (`createWebhook`, signed);
- polling: no webhook; the daemon polls `listEvents` every POLL seconds.

Each trial breaks one VPC (`POST /sim/break vr-backup-loop`: both routers lose their
configuration and go BACKUP) and measures from the break to the fix's `run_end` with exit 0 in
the daemon's audit log (the playbook's `verify` passed). A different VPC each trial.

Storm: one VPC broken, then STORM events about it over 10 s (`POST /sim/events`): the daemon's
runs and fixes are counted (one fix, bounded runs) and its RSS sampled against its idle RSS.

  bench/events.py                                              # 1,000 hypervisors, 100 routers
  bench/events.py --hosts 50 --vpcs 25 --jumps 5 --trials 20 --no-build   # smaller zone
"""

import argparse
import datetime
import hashlib
import hmac
import base64
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from fleet import binaries, log, setting  # noqa: E402
from simzone import free_port, fresh_lab  # noqa: E402
from steady import metric  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-webhook-secret"


def lab_base(lab):
    for line in lab.started.splitlines():
        if "GET http" in line and "/sim/state" in line:
            return line.split("GET ", 1)[1].strip().rsplit("/sim/state", 1)[0]
    raise SystemExit("the lab did not print its address:\n" + lab.started)


def post(url, body):
    req = urllib.request.Request(url, data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=30) as r:
        return json.loads(r.read() or b"{}")


def api_call(inventory, command, **args):
    """A signed CloudStack API call to the lab (the credentials its inventory names)."""
    text = Path(inventory).read_text()

    def value(key):
        for line in text.splitlines():
            line = line.strip()
            if line.startswith(key + ":"):
                return line.split(":", 1)[1].strip().strip('"')
        raise SystemExit(f"no {key} in {inventory}")

    endpoint, key = value("endpoint"), value("api_key")
    secret_ref = value("secret_key")
    if secret_ref.startswith("{"):
        path = secret_ref.split("file:", 1)[1].strip(" }\"'")
        secret = Path(path if os.path.isabs(path) else Path(inventory).parent / path).read_text().strip()
    else:
        secret = secret_ref
    params = dict(args, command=command, response="json", apikey=key)
    query = "&".join(f"{k}={urllib.parse.quote(str(v), safe='')}" for k, v in sorted(params.items()))
    sig = base64.b64encode(hmac.new(secret.encode(), query.lower().encode(), hashlib.sha1).digest())
    url = f"{endpoint}?{query}&signature={urllib.parse.quote(sig.decode(), safe='')}"
    with urllib.request.urlopen(url, timeout=30) as r:
        return json.loads(r.read())


def rss_kb(pid):
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def fixes(audit):
    """(run, vpc, exit) of each finished apply in the audit log."""
    runs, out = {}, []
    if not audit.exists():
        return out
    for line in audit.read_text().splitlines():
        r = json.loads(line)
        if r.get("event") == "run_start" and r.get("mode") == "apply":
            params = {p.get("name"): p.get("value") for p in r.get("params", [])} \
                if isinstance(r.get("params"), list) else (r.get("params") or {})
            runs[r["run"]] = (params.get("vpc"), r["ts"])
        if r.get("event") == "run_end" and r.get("run") in runs:
            out.append((r["run"], runs[r["run"]][0], r.get("exit_code"), r["ts"]))
    return out


class Daemon:
    def __init__(self, remedy, work, jobs, name):
        self.port = free_port()
        self.audit = work / f"audit-{name}.jsonl"
        state = work / f"state-{name}"
        shutil.rmtree(state, ignore_errors=True)
        self.proc = subprocess.Popen(
            [str(remedy), "daemon", "--jobs", str(jobs), "--state-dir", str(state),
             "--audit-log", str(self.audit), "--listen", f"127.0.0.1:{self.port}"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=open(work / f"daemon-{name}.log", "w"), cwd=work,
        )
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{self.port}/readyz", timeout=2)
                break
            except OSError:
                if time.time() > deadline:
                    raise SystemExit("the daemon never became ready")
                time.sleep(0.1)

    def stop(self):
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=120)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def jobs_file(work, inventory, poll):
    # The default debounce (5 s) and first_event (now): the first event runs at once.
    triggers = "triggers:\n  cloudstack: { secret: { file: webhook-secret } }\n"
    if poll:
        triggers += f"  poll:\n    - {{ name: zone, inventory: {inventory}, every: {poll}s, alerts: false }}\n"
    (work / "webhook-secret").write_text(SECRET)
    text = (
        triggers
        + "jobs:\n  - name: vr\n"
        + f"    playbook: {ROOT / 'playbooks' / 'vr-backup-loop.yml'}\n"
        + f"    inventory: {inventory}\n    cooldown: 0s\n    circuit: {{ fixes: 1000, window: 1h }}\n"
        + "    timeout: 5m\n    on:\n      - name: no-primary\n        match:\n"
        # (no `level`: a webhook's payload does not carry the event's level)
        + "          source: cloudstack\n          type: ROUTER.HEALTH.CHECKS\n"
        + "          description: \"no router of VPC .* is PRIMARY\"\n        lookup:\n"
        + "          router: { api: listRouters, args: { id: \"{{ event.resource_id }}\" } }\n"
        + "        params: { vpc: \"{{ router.vpcname }}\", vlan_range: \"1000-1999\" }\n"
    )
    path = work / f"jobs-{'poll' if poll else 'webhook'}.yml"
    path.write_text(text)
    return path


def trials(base, daemon, vpcs, n, timeout):
    """Break a VPC, wait for its verified fix; the latencies in seconds."""
    out = []
    for i in range(n):
        vpc = vpcs[i % len(vpcs)]
        seen = len(fixes(daemon.audit))
        t0 = time.time()
        post(f"{base}/sim/break", {"fault": "vr-backup-loop", "target": vpc})
        while True:
            done = [f for f in fixes(daemon.audit)[seen:] if f[1] == vpc]
            if any(f[2] == 0 for f in done):
                out.append(time.time() - t0)
                break
            if time.time() - t0 > timeout:
                raise SystemExit(f"{vpc}: no verified fix within {timeout} s "
                                 f"(runs: {fixes(daemon.audit)[seen:]})")
            time.sleep(0.05)
        log(f"  {vpc}: fixed in {out[-1]:.2f} s")
    return out


def stage(port, name):
    """(sum, count) of the daemon's remedy_event_latency_seconds for `name` (detection: event
    received -> detection started; fixed: event received -> fix finished)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    total = count = 0.0
    for line in text.splitlines():
        if f'stage="{name}"' not in line:
            continue
        if line.startswith("remedy_event_latency_seconds_sum"):
            total += float(line.rsplit(" ", 1)[1])
        elif line.startswith("remedy_event_latency_seconds_count"):
            count += float(line.rsplit(" ", 1)[1])
    return total, count


def stages(port, before):
    """The mean latency of each stage since `before` (a dict of stage() results)."""
    out = {}
    for name in ("detection", "fixed"):
        s, c = stage(port, name)
        s0, c0 = before.get(name, (0.0, 0.0))
        out[name] = (s - s0) / (c - c0) if c > c0 else float("nan")
    return out


def pct(xs, p):
    xs = sorted(xs)
    k = max(0, min(len(xs) - 1, round(p / 100 * (len(xs) - 1))))
    return xs[k]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--hosts", type=int, default=1000)
    ap.add_argument("--vpcs", type=int, default=50)
    ap.add_argument("--jumps", type=int, default=10)
    ap.add_argument("--trials", type=int, default=20)
    ap.add_argument("--poll", type=int, default=5, help="polling interval, seconds")
    ap.add_argument("--storm", type=int, default=500)
    ap.add_argument("--work", default="/var/tmp/remedy-bench-events")
    ap.add_argument("--no-build", action="store_true")
    ap.add_argument("--bin-dir", default=str(ROOT / "target" / "release"))
    ap.add_argument("--out")
    ap.add_argument("--keep", action="store_true", help="keep the work directory (audit logs)")
    args = ap.parse_args()
    args.wrap = None
    remedy, _ = binaries(args)
    work, lab = fresh_lab(remedy, args)
    results = {}
    try:
        base = lab_base(lab)
        vpcs = [f"vpc{v + 1:03d}" for v in range(args.vpcs)]
        # Webhooks.
        d = Daemon(remedy, work, jobs_file(work, lab.inventory, None), "webhook")
        try:
            api_call(lab.inventory, "createWebhook", name="remedy-bench", scope="Global",
                     payloadurl=f"http://127.0.0.1:{d.port}/hooks/cloudstack",
                     secretkey=SECRET, state="Enabled")
            log(f"webhook: {args.trials} trials")
            results["webhook"] = trials(base, d, vpcs[: args.vpcs // 2 or 1], args.trials, 300)
            results["webhook_stages"] = stages(d.port, {})
            # The storm, on the same daemon: one VPC broken, then the events about it.
            storm_vpc = vpcs[-1]
            idle = rss_kb(d.proc.pid)
            runs0 = metric(d.port, "remedy_job_runs_total")
            seen = len(fixes(d.audit))
            post(f"{base}/sim/break", {"fault": "vr-backup-loop", "target": storm_vpc})
            routers = api_call(lab.inventory, "listRouters", listall="true")
            router = next(r for r in routers["listroutersresponse"]["router"]
                          if r.get("vpcname") == storm_vpc)
            peak, t0 = idle, time.time()
            per = max(1, args.storm // 10)
            for _ in range(10):
                post(f"{base}/sim/events", {
                    "type": "ROUTER.HEALTH.CHECKS", "level": "ERROR", "state": "Completed",
                    "description": f"Redundant virtual router {router['name']} just switch from "
                                   f"PRIMARY to BACKUP; no router of VPC {storm_vpc} is PRIMARY",
                    "resource": router["name"], "count": per})
                end = time.time() + 1
                while time.time() < end:
                    peak = max(peak, rss_kb(d.proc.pid))
                    time.sleep(0.05)
            deadline = time.time() + 120
            while time.time() < deadline:
                peak = max(peak, rss_kb(d.proc.pid))
                time.sleep(0.2)
                if metric(d.port, "remedy_job_runs_total") == runs0 and time.time() - t0 < 15:
                    continue
                if time.time() - t0 > 30:
                    break
            storm_fixes = [f for f in fixes(d.audit)[seen:] if f[1] == storm_vpc]
            results["storm"] = {
                "events": per * 10, "runs": metric(d.port, "remedy_job_runs_total") - runs0,
                "fixes": len([f for f in storm_fixes if f[2] == 0]),
                "applies": len(storm_fixes), "idle_kb": idle, "peak_kb": peak,
            }
            log(f"storm: {results['storm']}")
        finally:
            d.stop()
        # Polling: no webhook delivery reaches this daemon (the webhook points at the old one).
        d = Daemon(remedy, work, jobs_file(work, lab.inventory, args.poll), "poll")
        try:
            log(f"polling every {args.poll} s: {args.trials} trials")
            results["poll"] = trials(base, d, vpcs[args.vpcs // 2 or 1:-1] or vpcs, args.trials, 300)
            results["poll_stages"] = stages(d.port, {})
        finally:
            d.stop()
    finally:
        lab.stop()
    write_report(args, results, remedy)
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)


def write_report(args, r, remedy):
    now = datetime.datetime.now(datetime.timezone.utc)
    out = Path(args.out or ROOT / "bench" / "results" / f"events-{now:%Y%m%d-%H%M}.md")
    s = r["storm"]
    lines = [
        f"# Event-driven fixes: alert -> verified fix ({now:%Y-%m-%d %H:%M} UTC)",
        "",
        f"{setting(remedy)}. Zone: {args.hosts} hypervisors, {2 * args.vpcs} routers on the first "
        f"{args.jumps} (`remedy lab`). Job `vr-backup-loop` started by a rule on the zone's "
        "ROUTER.HEALTH.CHECKS ERROR event (the VPC looked up from the router); each trial breaks "
        "a different VPC and ends at the fix's `run_end` exit 0 (bench/events.py). The last two "
        "columns are the daemon's own `remedy_event_latency_seconds` (from the event's arrival, "
        "so without the zone's delivery or the poll interval).",
        "",
        "| trigger | trials | p50 (s) | p95 (s) | max (s) | mean event -> detection (s) | mean event -> fixed (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, label in (("webhook", "webhook (signed delivery)"),
                        ("poll", f"polling listEvents every {args.poll} s")):
        xs, st = r[name], r[name + "_stages"]
        lines.append(f"| {label} | {len(xs)} | {statistics.median(xs):.2f} | {pct(xs, 95):.2f} "
                     f"| {max(xs):.2f} | {st['detection']:.3f} | {st['fixed']:.2f} |")
    lines += [
        "",
        f"Storm: {s['events']} events about one broken VPC over 10 s: {s['runs']:.0f} run(s), "
        f"{s['fixes']} fix(es) ({s['applies']} apply run(s)); daemon RSS idle "
        f"{s['idle_kb'] / 1024:.1f} MB, peak {s['peak_kb'] / 1024:.1f} MB "
        f"(**{s['peak_kb'] / s['idle_kb']:.2f}x** idle).",
        "",
    ]
    out.write_text("\n".join(lines))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
