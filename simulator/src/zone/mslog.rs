//! Jobs that ran before the zone started (a scenario's `past_jobs`), and the management
//! servers' `management-server.log` that records them among the noise of a working day.
//!
//! Each past job becomes a finished job record (`queryAsyncJobResult`, `listAsyncJobs`) with
//! the scenario's uuid, times, result code and error text. Its lines go to the log of the
//! management server that ran it (`mgmt`, default the first), in CloudStack 4.18's layout:
//! the API call, `submit async job-N`, `Executing AsyncJobVO {id:N, ...}`, the stop of the VM
//! on its host (`Stopping VM[User|i-2-940-VM] on host 49`, the `StopCommand` sent), a `WARN`
//! `Unable to stop vm VM[User|i-2-940-VM] on host id 49: ...` when the command times out, the
//! `ERROR` with the exception and its stack, and `Complete async job-N, jobStatus: FAILED,
//! resultCode: 530, ...`. The host's agent belongs to the next management server when there
//! are several, so the command is forwarded there: that server's log has the forwarded
//! command and its time-out under the same `logid`, but not the job's number.
//!
//! Logs are split by day as log4j's daily rotation leaves them: the day of the latest job is
//! `management-server.log`; every earlier day, from the day before the first job, is
//! `management-server.log.YYYY-MM-DD.gz`, real gzip. Noise on every server and day: API list
//! calls, agent pings, other jobs that succeed, and a WARN of another job.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::jobs::{class_of, Effect, Job, FAILED};
use super::model::{id_for, World};
use super::Zone;
use crate::scenario::{PastJobSeed, Scenario};

/// The log of the current day.
pub const MS_LOG: &str = "/var/log/cloudstack/management/management-server.log";

/// `msid` of management server `i` (0-based), as the logs show it.
fn msid(i: usize) -> u64 {
    32_987_882_193_394 + i as u64
}

/// A deterministic lower-case hex word of `n` digits for `(salt, key)`.
fn hex(salt: &str, key: &str, n: usize) -> String {
    let digits = id_for(salt, key).replace('-', "");
    digits[digits.len() - n..].to_string()
}

/// `2026-12-05 23:59:41,204`.
fn stamp(t: jiff::Timestamp) -> String {
    let ms = t.subsec_millisecond();
    format!("{},{ms:03}", t.strftime("%Y-%m-%d %H:%M:%S"))
}

fn plus(t: jiff::Timestamp, ms: i64) -> jiff::Timestamp {
    t + jiff::SignedDuration::from_millis(ms)
}

fn day(t: jiff::Timestamp) -> jiff::civil::Date {
    t.to_zoned(jiff::tz::TimeZone::UTC).date()
}

fn parse_time(text: &str, what: &str) -> Result<jiff::Timestamp, String> {
    text.parse::<jiff::Timestamp>()
        .map_err(|e| format!("{what}: {text:?} is not an RFC 3339 time: {e}"))
}

/// Log lines (time, text) per management server index.
type Lines = BTreeMap<usize, Vec<(jiff::Timestamp, String)>>;

impl Zone {
    /// The scenario's past jobs: records, and the management servers' logs around them.
    pub(super) fn seed_past_jobs(&mut self, s: &Scenario) -> Result<(), String> {
        if s.past_jobs.is_empty() {
            return Ok(());
        }
        let servers = self.world.mgmts().count();
        let mut lines: Lines = BTreeMap::new();
        let mut times = Vec::new();
        for seed in &s.past_jobs {
            let at = format!("past_jobs.{}", seed.number);
            let created = parse_time(&seed.created, &format!("{at}.created"))?;
            let completed = parse_time(&seed.completed, &format!("{at}.completed"))?;
            if completed < created {
                return Err(format!("{at}: completed is before created"));
            }
            let ms = match &seed.mgmt {
                None => 0,
                Some(name) => self
                    .world
                    .mgmts()
                    .position(|m| &m.name == name)
                    .ok_or_else(|| format!("{at}.mgmt: no management server {name}"))?,
            };
            let job = self.past_job(seed, created, completed, &at)?;
            self.job_lines(seed, &job, ms, servers, &mut lines);
            self.jobs.push(job);
            times.extend([created, completed]);
        }
        let first = day(*times.iter().min().expect("a job"))
            .yesterday()
            .map_err(|e| e.to_string())?;
        let today = day(*times.iter().max().expect("a job"));
        let taken: Vec<u64> = s.past_jobs.iter().map(|j| j.number).collect();
        for i in 0..servers {
            let mine = lines.entry(i).or_default();
            let mut d = first;
            let mut offset = 0;
            while d <= today {
                mine.extend(noise(&self.world, i, d, 500 + offset * 60, &taken));
                offset += 1;
                d = d.tomorrow().map_err(|e| e.to_string())?;
            }
            mine.sort_by_key(|(t, _)| *t);
            self.write_logs(i, mine, today);
        }
        Ok(())
    }

    fn past_job(
        &self,
        seed: &PastJobSeed,
        created: jiff::Timestamp,
        completed: jiff::Timestamp,
        at: &str,
    ) -> Result<Job, String> {
        if !["destroyVirtualMachine", "stopVirtualMachine"].contains(&seed.command.as_str()) {
            return Err(format!(
                "{at}.command: {} (known: destroyVirtualMachine, stopVirtualMachine)",
                seed.command
            ));
        }
        let vm = self
            .world
            .vms
            .iter()
            .find(|v| v.name == seed.vm && v.is_guest())
            .ok_or_else(|| format!("{at}.vm: no guest VM {}", seed.vm))?;
        if !self.world.hosts.iter().any(|h| h.name == seed.host) {
            return Err(format!("{at}.host: no host {}", seed.host));
        }
        uuid::Uuid::parse_str(&seed.id).map_err(|e| format!("{at}.id: {e}"))?;
        let result = json!({"errorcode": seed.resultcode, "errortext": seed.errortext});
        Ok(Job {
            jobid: seed.id.clone(),
            command: seed.command.clone(),
            cmd: class_of(&seed.command),
            instancetype: "VirtualMachine".into(),
            instanceid: vm.id.clone(),
            created,
            due: completed,
            boot_ms: 0,
            status: FAILED,
            resultcode: seed.resultcode,
            result: result.clone(),
            failure: None,
            injected: false,
            started_event: None,
            effect: Effect::Nothing {
                result: Value::Null,
            },
        })
    }

    /// The lines one failed job leaves: on its own server, and the forwarded command on the
    /// next one (the host's agent's server) when there are several.
    fn job_lines(&self, seed: &PastJobSeed, job: &Job, ms: usize, servers: usize, out: &mut Lines) {
        let w = &self.world;
        let vm = w.vm(&job.instanceid).expect("checked");
        let (n, vmname) = (seed.number, vm.log_name());
        let inst = format!("i-2-{}-VM", vm.number);
        let host = format!("{}({})", seed.host_dbid, seed.host);
        let key = n.to_string();
        let (api_ctx, sub_ctx) = (
            hex("ctx", &format!("{key}a"), 8),
            hex("ctx", &format!("{key}b"), 8),
        );
        let (exec_ctx, work_ctx) = (
            hex("ctx", &format!("{key}c"), 8),
            hex("ctx", &format!("{key}d"), 8),
        );
        let (log1, log2) = (
            hex("logid", &format!("{key}a"), 8),
            hex("logid", &format!("{key}b"), 8),
        );
        let seq = format!("{}-{}", seed.host_dbid, 8_712_394_812_934_000 + n);
        let qtp = format!("qtp1386767190-{}", 300 + n % 200);
        let exec = format!("API-Job-Executor-{}", 1 + n % 40);
        let verb = seed.command.trim_end_matches("VirtualMachine");
        let cmd = &job.cmd;
        let info = format!(
            "{{\"expunge\":\"false\",\"response\":\"json\",\"id\":\"{}\",\"ctxUserId\":\"2\",\"httpmethod\":\"GET\",\"ctxAccountId\":\"2\",\"ctxStartEventId\":\"{}\"}}",
            vm.id,
            4000 + n
        );
        let vo = |created: &str| {
            format!(
                "AsyncJobVO {{id:{n}, userId: 2, accountId: 2, instanceType: VirtualMachine, instanceId: {}, cmd: {cmd}, cmdInfo: {info}, cmdVersion: 0, status: IN_PROGRESS, processStatus: 0, resultCode: 0, result: null, initMsid: {}, completeMsid: null, lastUpdated: null, lastPolled: null, created: {created}, removed: null}}",
                vm.number,
                msid(ms)
            )
        };
        let (t0, t1) = (job.created, job.due);
        let api = format!("{qtp}:ctx-{api_ctx}");
        let in_job = format!("{exec}:ctx-{exec_ctx} job-{n}");
        let in_work = format!("{in_job} ctx-{work_ctx}");
        let created_text = t0.strftime("%a %b %d %H:%M:%S UTC %Y").to_string();
        let query = format!(
            "command={verb}VirtualMachine&id={}&expunge=false&response=json",
            vm.id
        );
        let timeout_at = plus(t1, -1200);
        let forwarded = servers > 1;
        let mut mine = vec![
            (t0, format!("DEBUG [c.c.a.ApiServlet] ({api}) (logid:{log1}) ===START===  10.1.0.50 -- GET  {query}")),
            (plus(t0, 23), format!("DEBUG [o.a.c.f.j.i.AsyncJobManagerImpl] ({api} ctx-{sub_ctx}) (logid:{log1}) submit async job-{n}, details: {}", vo("null"))),
            (plus(t0, 31), format!("DEBUG [c.c.a.ApiServlet] ({api} ctx-{sub_ctx}) (logid:{log1}) ===END===  10.1.0.50 -- GET  {query}")),
            (plus(t0, 42), format!("DEBUG [o.a.c.f.j.i.AsyncJobManagerImpl$5] ({in_job}) (logid:{log2}) Executing {}", vo(&created_text))),
            (plus(t0, 77), format!("DEBUG [c.c.v.UserVmManagerImpl] ({in_work}) (logid:{log2}) Trying to {verb} {vmname}, the user asked for it")),
            (plus(t0, 96), format!("DEBUG [c.c.v.VirtualMachineManagerImpl] ({in_work}) (logid:{log2}) Stopping {vmname} on host {}", seed.host_dbid)),
            (plus(t0, 104), format!("DEBUG [c.c.a.t.Request] ({in_work}) (logid:{log2}) Seq {seq}: Sending  {{ Cmd , MgmtId: {}, via: {host}, Ver: v1, Flags: 100011, [{{\"com.cloud.agent.api.StopCommand\":{{\"isProxy\":\"false\",\"checkBeforeCleanup\":\"false\",\"forceStop\":\"false\",\"vmName\":\"{inst}\",\"executeInSequence\":\"false\",\"wait\":\"0\"}}}}] }}", msid(ms))),
            (timeout_at, format!("WARN  [c.c.v.VirtualMachineManagerImpl] ({in_work}) (logid:{log2}) Unable to stop vm {vmname} on host id {}: Operation timed out: Commands {} to Host {} timed out after 30", seed.host_dbid, seq.split('-').nth(1).unwrap_or_default(), seed.host_dbid)),
            (plus(t1, -14), format!("ERROR [c.c.a.ApiAsyncJobDispatcher] ({in_job}) (logid:{log2}) Unexpected exception while executing {cmd}\ncom.cloud.utils.exception.CloudRuntimeException: {}\n\tat com.cloud.vm.UserVmManagerImpl.destroyVm(UserVmManagerImpl.java:3411)\n\tat org.apache.cloudstack.api.command.user.vm.DestroyVMCmd.execute(DestroyVMCmd.java:112)\n\tat com.cloud.api.ApiDispatcher.dispatch(ApiDispatcher.java:172)\n\tat com.cloud.api.ApiAsyncJobDispatcher.runJob(ApiAsyncJobDispatcher.java:112)", seed.errortext)),
            (t1, format!("DEBUG [o.a.c.f.j.i.AsyncJobManagerImpl] ({in_job}) (logid:{log2}) Complete async job-{n}, jobStatus: FAILED, resultCode: {}, result: org.apache.cloudstack.api.response.ExceptionResponse/null/{{\"uuidList\":[],\"errorcode\":{},\"errortext\":\"{}\"}}", seed.resultcode, seed.resultcode, seed.errortext)),
            (plus(t1, 3), format!("DEBUG [o.a.c.f.j.i.AsyncJobManagerImpl] ({in_job}) (logid:{log2}) Done executing {cmd} for job-{n}")),
        ];
        if forwarded {
            let peer = (ms + 1) % servers;
            mine.push((plus(t0, 105), format!("DEBUG [c.c.a.m.ClusteredAgentAttache] ({in_work}) (logid:{log2}) Seq {seq}: Forwarding Seq {seq}:  {{ Cmd , MgmtId: {}, via: {host}, Ver: v1, Flags: 100011, [StopCommand {inst}] }} to {}", msid(ms), msid(peer))));
            let theirs = out.entry(peer).or_default();
            theirs.push((plus(t0, 118), format!("DEBUG [c.c.a.m.ClusteredAgentManagerImpl] (Cluster-Worker-4:ctx-{}) (logid:{log2}) Seq {seq}: Dispatching StopCommand for {inst} to host {host}", hex("ctx", &format!("{key}e"), 8))));
            theirs.push((plus(timeout_at, -40), format!("WARN  [c.c.a.m.AgentAttache] (AgentManager-Timer-2:null) (logid:{log2}) Seq {seq}: Timed out on {{ Cmd , MgmtId: {}, via: {host}, Ver: v1, Flags: 100011, [StopCommand {inst}] }}", msid(ms))));
        }
        out.entry(ms).or_default().extend(mine);
    }

    /// Writes server `i`'s lines: `today` to the log, earlier days to gzipped rotations.
    fn write_logs(
        &mut self,
        i: usize,
        lines: &[(jiff::Timestamp, String)],
        today: jiff::civil::Date,
    ) {
        let mut by_day: BTreeMap<jiff::civil::Date, String> = BTreeMap::new();
        for (t, text) in lines {
            let entry = by_day.entry(day(*t)).or_default();
            entry.push_str(&stamp(*t));
            entry.push(' ');
            entry.push_str(text);
            entry.push('\n');
        }
        let name = self.world.mgmts().nth(i).expect("exists").name.clone();
        let g = self.world.guest_mut(&name).expect("management server");
        for (d, text) in by_day {
            if d == today {
                g.put_file(MS_LOG, 0o644, "cloud", &text);
                if let Some(f) = g.files.get_mut(MS_LOG) {
                    f.group = "cloud".into();
                }
            } else {
                g.put_gzip(
                    &format!("{MS_LOG}.{}.gz", d.strftime("%Y-%m-%d")),
                    "cloud",
                    &text,
                );
            }
        }
    }
}

/// A day of ordinary traffic on server `i`: list calls every 20 minutes, agent pings every
/// hour, an hourly successful job (numbered from `first_job`, skipping the `taken` numbers
/// of past jobs), and a WARN of another job in the afternoon.
fn noise(
    w: &World,
    i: usize,
    d: jiff::civil::Date,
    first_job: u64,
    taken: &[u64],
) -> Vec<(jiff::Timestamp, String)> {
    let at = |h: i8, m: i8, s: i8, ms: i64| {
        d.at(h, m, s, 0)
            .to_zoned(jiff::tz::TimeZone::UTC)
            .map(|z| plus(z.timestamp(), ms))
            .expect("a valid time")
    };
    let key = |x: &str| format!("{i}/{d}/{x}");
    let mut out = Vec::new();
    let lists = [
        "listVirtualMachines&listall=true",
        "listHosts&type=Routing",
        "listRouters&listall=true",
        "listSystemVms",
    ];
    for slot in 0..72i64 {
        let (h, m) = ((slot / 3) as i8, ((slot % 3) * 20) as i8 + i as i8 * 7);
        let ctx = hex("ctx", &key(&format!("list{slot}")), 8);
        let logid = hex("logid", &key(&format!("list{slot}")), 8);
        let q = format!(
            "command={}&response=json",
            lists[slot as usize % lists.len()]
        );
        let thread = format!("qtp1386767190-{}", 20 + slot % 60);
        out.push((at(h, m, 4, 117), format!("DEBUG [c.c.a.ApiServlet] ({thread}:ctx-{ctx}) (logid:{logid}) ===START===  10.1.0.50 -- GET  {q}")));
        out.push((at(h, m, 4, 169), format!("DEBUG [c.c.a.ApiServlet] ({thread}:ctx-{ctx}) (logid:{logid}) ===END===  10.1.0.50 -- GET  {q}")));
    }
    for h in 0..24i8 {
        for (hi, host) in w
            .hosts
            .iter()
            .enumerate()
            .filter(|(hi, _)| hi % w.mgmts().count() == i)
        {
            out.push((at(h, 12 + hi as i8, 30, 0), format!("DEBUG [c.c.a.m.AgentManagerImpl$AgentHandler] (AgentManager-Handler-{}:null) (logid:) Ping from Routing host {}({})", 1 + hi, 47 + hi, host.name)));
        }
        let mut n = first_job + u64::from(h as u8) * 2 + i as u64;
        if taken.contains(&n) {
            n += 10_000;
        }
        let ctx = hex("ctx", &key(&format!("job{h}")), 8);
        let logid = hex("logid", &key(&format!("job{h}")), 8);
        let exec = format!("API-Job-Executor-{}:ctx-{ctx} job-{n}", 1 + h as u64);
        out.push((at(h, 41, 2, 310), format!("DEBUG [o.a.c.f.j.i.AsyncJobManagerImpl$5] ({exec}) (logid:{logid}) Executing AsyncJobVO {{id:{n}, userId: 2, accountId: 2, instanceType: DomainRouter, instanceId: 930, cmd: org.apache.cloudstack.api.command.admin.router.RebootRouterCmd, cmdVersion: 0, status: IN_PROGRESS, processStatus: 0, resultCode: 0, result: null, initMsid: {}, completeMsid: null}}", msid(i))));
        if h == 15 {
            out.push((at(h, 41, 9, 512), format!("WARN  [c.c.n.r.VirtualNetworkApplianceManagerImpl] ({exec}) (logid:{logid}) Unable to reach router r-930-VM on its link-local address, retrying")));
        }
        out.push((at(h, 41, 31, 88), format!("DEBUG [o.a.c.f.j.i.AsyncJobManagerImpl] ({exec}) (logid:{logid}) Complete async job-{n}, jobStatus: SUCCEEDED, resultCode: 0, result: org.apache.cloudstack.api.response.DomainRouterResponse/router/{{\"id\":\"{}\",\"state\":\"Running\"}}", id_for("vm", "r-930-VM"))));
    }
    out
}
