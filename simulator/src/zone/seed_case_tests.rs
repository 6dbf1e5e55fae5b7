//! The seeds' diagnostic cases on a synthetic clock: the FirstFit maintenance failure and its
//! fix by explicit migration, the stale NIC listing, the failed job and its logs, and hosts
//! whose agent is restarted.

use serde_json::Value;

use super::tests::{at, call, inner, t0, zone};
use super::*;
use crate::ssh::commands::run_line;

/// Starts an async command at `now` and returns its job record once it ended.
fn run_job(z: &mut Zone, command: &str, args: &[(&str, &str)], now: jiff::Timestamp) -> Value {
    let r = call(z, command, args, now);
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = inner(&r)["jobid"].as_str().unwrap().to_string();
    let later = now + jiff::SignedDuration::from_secs(10);
    inner(&call(z, "queryAsyncJobResult", &[("jobid", &id)], later)).clone()
}

fn host_id(z: &Zone, name: &str) -> String {
    z.world()
        .hosts
        .iter()
        .find(|h| h.name == name)
        .unwrap()
        .id
        .clone()
}

fn vm_id(z: &Zone, name: &str) -> String {
    z.world()
        .vms
        .iter()
        .find(|v| v.name == name)
        .unwrap()
        .id
        .clone()
}

/// The host (by name) a VM runs on.
fn host_of(z: &Zone, vm: &str) -> String {
    let v = z.world().vms.iter().find(|v| v.name == vm).unwrap();
    z.world().host(&v.hostid).unwrap().name.clone()
}

fn host_item(z: &mut Zone, name: &str, now: jiff::Timestamp) -> Value {
    let r = call(z, "listHosts", &[("name", name)], now);
    inner(&r)["host"][0].clone()
}

#[test]
fn hosts_show_cluster_tags_and_capacity_as_the_api_names_them() {
    let mut z = zone("host-maintenance-firstfit");
    let h = host_item(&mut z, "kvm-c1", t0());
    assert_eq!(h["clustername"], "cluster-c");
    assert_eq!(h["hosttags"], "generic,linux");
    assert_eq!(h["cpunumber"], 4);
    assert_eq!(h["cpuspeed"], 2000);
    assert_eq!(h["cpuallocated"], "25%");
    assert_eq!(h["cpuallocatedvalue"], 2000);
    assert_eq!(h["memorytotal"], 8192u64 << 20);
    assert_eq!(h["memoryallocated"], 4096u64 << 20);
    let r = call(&mut z, "listClusters", &[], t0());
    let names: Vec<&str> = inner(&r)["cluster"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["cluster-a", "cluster-b", "cluster-c"]);
    let r = call(
        &mut z,
        "listServiceOfferings",
        &[("name", "generic-linux")],
        t0(),
    );
    assert_eq!(inner(&r)["serviceoffering"][0]["hosttags"], "generic");
    let r = call(&mut z, "listTemplates", &[("templatefilter", "all")], t0());
    assert_eq!(inner(&r)["template"][1]["templatetag"], "linux");
    let r = call(&mut z, "listTemplates", &[], t0());
    assert_eq!(r.status, 431, "templatefilter is required");
    let r = call(
        &mut z,
        "listVirtualMachines",
        &[("listall", "true"), ("name", "app-1")],
        t0(),
    );
    let vm = &inner(&r)["virtualmachine"][0];
    assert_eq!(vm["serviceofferingname"], "generic-linux");
    assert_eq!(vm["templatename"], "ubuntu-22.04-linux");
    assert_eq!(vm["hostname"], "kvm-a1");
    let r = call(
        &mut z,
        "listConfigurations",
        &[("name", "migrate.vm.across.clusters")],
        t0(),
    );
    assert_eq!(inner(&r)["configuration"][0]["value"], "true");
}

#[test]
fn firstfit_gives_up_after_the_first_other_cluster() {
    let mut z = zone("host-maintenance-firstfit");
    let a1 = host_id(&z, "kvm-a1");
    let r = call(&mut z, "prepareHostForMaintenance", &[("id", &a1)], t0());
    assert_eq!(r.status, 200);
    assert_eq!(
        host_item(&mut z, "kvm-a1", at(10))["resourcestate"],
        "PrepareForMaintenance"
    );
    let id = inner(&r)["jobid"].as_str().unwrap().to_string();
    let job = inner(&call(
        &mut z,
        "queryAsyncJobResult",
        &[("jobid", &id)],
        at(5000),
    ))
    .clone();
    assert_eq!(job["jobstatus"], 2);
    assert_eq!(job["jobresultcode"], 530);
    assert_eq!(
        job["cmd"],
        "org.apache.cloudstack.api.command.admin.host.PrepareForMaintenanceCmd"
    );
    let text = job["jobresult"]["errortext"].as_str().unwrap();
    let n1 = z.world().vm(&vm_id(&z, "app-1")).unwrap().number;
    assert!(
        text.starts_with("Failed to prepare host kvm-a1 for maintenance, it is now in ErrorInMaintenance: unable to migrate 2 VM(s) away:"),
        "{text}"
    );
    assert!(
        text.contains(&format!(
            "VM[User|i-2-{n1}-VM] (app-1): No suitable host found for vm VM[User|i-2-{n1}-VM]."
        )),
        "{text}"
    );
    assert_eq!(
        host_item(&mut z, "kvm-a1", at(5000))["resourcestate"],
        "ErrorInMaintenance"
    );
    assert_eq!(host_of(&z, "app-1"), "kvm-a1");
    assert_eq!(host_of(&z, "app-2"), "kvm-a1");
    assert_eq!(host_of(&z, "s-1-VM"), "kvm-a2", "the system VM had a place");
}

#[test]
fn with_the_suitable_cluster_first_or_one_cluster_tried_the_outcome_follows_the_rule() {
    let text = Scenario::builtin("host-maintenance-firstfit").unwrap();
    // cluster-c right after the host's own: FirstFit finds it
    let mut s = text.clone();
    s.clusters.swap(1, 2);
    let mut z = Zone::new(&s);
    let a1 = host_id(&z, "kvm-a1");
    let job = run_job(&mut z, "prepareHostForMaintenance", &[("id", &a1)], t0());
    assert_eq!(job["jobstatus"], 1, "{job}");
    assert_eq!(job["jobresult"]["host"]["resourcestate"], "Maintenance");
    assert_eq!(host_of(&z, "app-1"), "kvm-c1", "the first with room");
    assert_eq!(host_of(&z, "app-2"), "kvm-c2", "kvm-c1 is full now");
    // across clusters off: only the host's own cluster is tried
    let mut s = text.clone();
    s.clusters.swap(1, 2);
    s.settings
        .insert("migrate.vm.across.clusters".into(), "false".into());
    let mut z = Zone::new(&s);
    let job = run_job(&mut z, "prepareHostForMaintenance", &[("id", &a1)], t0());
    assert_eq!(job["jobresultcode"], 530);
}

#[test]
fn migrating_by_hand_then_maintenance_succeeds_and_cancel_enables() {
    let mut z = zone("host-maintenance-firstfit");
    let (a1, b1, c1, c2) = (
        host_id(&z, "kvm-a1"),
        host_id(&z, "kvm-b1"),
        host_id(&z, "kvm-c1"),
        host_id(&z, "kvm-c2"),
    );
    let (app1, app2) = (vm_id(&z, "app-1"), vm_id(&z, "app-2"));
    let n1 = z.world().vm(&app1).unwrap().number;
    // wrong tags: refused in the job, with 431
    let job = run_job(
        &mut z,
        "migrateVirtualMachine",
        &[("virtualmachineid", &app1), ("hostid", &b1)],
        t0(),
    );
    assert_eq!(job["jobresultcode"], 431);
    assert_eq!(
        job["jobresult"]["errortext"],
        format!("Cannot migrate VM, destination host kvm-b1 has host tags [generic] but VM[User|i-2-{n1}-VM] needs [generic,linux]")
    );
    // the same host: refused
    let job = run_job(
        &mut z,
        "migrateVirtualMachine",
        &[("virtualmachineid", &app1), ("hostid", &a1)],
        t0(),
    );
    assert_eq!(
        job["jobresult"]["errortext"],
        "Cannot migrate VM, VM is already present on this host, please specify valid destination host to migrate the VM"
    );
    // a suitable host: Migrating meanwhile, then there with its capacity
    let r = call(
        &mut z,
        "migrateVirtualMachine",
        &[("virtualmachineid", &app1), ("hostid", &c1)],
        at(100),
    );
    let jobid = inner(&r)["jobid"].as_str().unwrap().to_string();
    assert_eq!(z.world().vm(&app1).unwrap().state, "Migrating");
    let job = inner(&call(
        &mut z,
        "queryAsyncJobResult",
        &[("jobid", &jobid)],
        at(5000),
    ))
    .clone();
    assert_eq!(job["jobstatus"], 1, "{job}");
    assert_eq!(job["jobresult"]["virtualmachine"]["hostname"], "kvm-c1");
    assert_eq!(job["jobinstancetype"], "VirtualMachine");
    assert_eq!(
        host_item(&mut z, "kvm-c1", at(5000))["memoryallocated"],
        8192u64 << 20
    );
    assert_eq!(
        host_item(&mut z, "kvm-a1", at(5000))["memoryallocated"],
        4096u64 << 20
    );
    // kvm-c1 is full now: 533
    let job = run_job(
        &mut z,
        "migrateVirtualMachine",
        &[("virtualmachineid", &app2), ("hostid", &c1)],
        at(6000),
    );
    assert_eq!(job["jobresultcode"], 533, "{job}");
    let job = run_job(
        &mut z,
        "migrateVirtualMachine",
        &[("virtualmachineid", &app2), ("hostid", &c2)],
        at(6000),
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
    let job = run_job(
        &mut z,
        "prepareHostForMaintenance",
        &[("id", &a1)],
        at(20_000),
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
    assert_eq!(job["jobresult"]["host"]["resourcestate"], "Maintenance");
    let job = run_job(
        &mut z,
        "prepareHostForMaintenance",
        &[("id", &a1)],
        at(40_000),
    );
    assert_eq!(job["jobresultcode"], 530, "already in maintenance: {job}");
    let job = run_job(&mut z, "cancelHostMaintenance", &[("id", &a1)], at(60_000));
    assert_eq!(job["jobresult"]["host"]["resourcestate"], "Enabled");
    let job = run_job(&mut z, "cancelHostMaintenance", &[("id", &a1)], at(80_000));
    assert_eq!(job["jobresultcode"], 530, "nothing to cancel: {job}");
}

/// The names `listVirtualMachines networkid=<tier>` returns.
fn listed_on(z: &mut Zone, tier: &str) -> Vec<String> {
    let net = z
        .world()
        .networks
        .iter()
        .find(|n| n.name == tier)
        .unwrap()
        .id
        .clone();
    let r = call(
        z,
        "listVirtualMachines",
        &[("listall", "true"), ("networkid", &net)],
        at(20_000),
    );
    let mut names: Vec<String> = inner(&r)["virtualmachine"]
        .as_array()
        .map(|a| {
            a.iter()
                .map(|v| v["name"].as_str().unwrap().to_string())
                .collect()
        })
        .unwrap_or_default();
    names.sort();
    names
}

fn nic_networks(z: &mut Zone, vm: &str) -> Vec<String> {
    let id = vm_id(z, vm);
    let r = call(z, "listNics", &[("virtualmachineid", &id)], at(20_000));
    inner(&r)["nic"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["networkname"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_removed_nic_leaves_the_vm_in_the_networks_instance_list() {
    let mut z = zone("stale-nics");
    assert_eq!(listed_on(&mut z, "backend"), ["api-1", "web-1", "web-2"]);
    assert_eq!(nic_networks(&mut z, "web-1"), ["web"]);
    assert_eq!(nic_networks(&mut z, "api-1"), ["backend"]);
    assert_eq!(listed_on(&mut z, "web"), ["tools-1", "web-1", "web-2"]);
    assert_eq!(nic_networks(&mut z, "tools-1"), ["tools", "web"]);
    // removing tools-1's web NIC now: the same bug appears
    let tools = vm_id(&z, "tools-1");
    let r = call(&mut z, "listNics", &[("virtualmachineid", &tools)], t0());
    let nics = inner(&r)["nic"].as_array().unwrap().clone();
    let (default, extra) = (
        nics[0]["id"].as_str().unwrap().to_string(),
        nics[1]["id"].as_str().unwrap().to_string(),
    );
    let job = run_job(
        &mut z,
        "removeNicFromVirtualMachine",
        &[("virtualmachineid", &tools), ("nicid", &default)],
        t0(),
    );
    assert_eq!(job["jobresultcode"], 431);
    assert!(
        job["jobresult"]["errortext"]
            .as_str()
            .unwrap()
            .ends_with("in network tools, nic is default."),
        "{job}"
    );
    let job = run_job(
        &mut z,
        "removeNicFromVirtualMachine",
        &[("virtualmachineid", &tools), ("nicid", &extra)],
        t0(),
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
    assert_eq!(
        job["cmd"],
        "org.apache.cloudstack.api.command.user.vm.RemoveNicFromVMCmd"
    );
    assert_eq!(
        job["jobresult"]["virtualmachine"]["nic"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert_eq!(nic_networks(&mut z, "tools-1"), ["tools"]);
    assert_eq!(listed_on(&mut z, "web"), ["tools-1", "web-1", "web-2"]);
    assert!(!z.guest("tools-1").unwrap().links.contains_key("eth1"));
    // the removed NIC is gone for the API: asking again is an unknown id
    let r = call(
        &mut z,
        "removeNicFromVirtualMachine",
        &[("virtualmachineid", &tools), ("nicid", &extra)],
        at(30_000),
    );
    assert_eq!(r.status, 431);
}

const JOB: &str = "5b1f2c9e-7d43-4a8e-9c61-2f0e8d7a3b10";

#[test]
fn the_failed_job_is_queryable_and_listed() {
    let mut z = zone("job-triage");
    let r = call(&mut z, "queryAsyncJobResult", &[("jobid", JOB)], t0());
    let j = inner(&r);
    assert_eq!(j["jobstatus"], 2);
    assert_eq!(j["jobresultcode"], 530);
    assert_eq!(
        j["cmd"],
        "org.apache.cloudstack.api.command.user.vm.DestroyVMCmd"
    );
    assert_eq!(j["jobresult"]["errortext"], "Failed to destroy vm");
    assert_eq!(j["jobinstancetype"], "VirtualMachine");
    assert_eq!(j["jobinstanceid"], vm_id(&z, "web-940"));
    assert_eq!(j["created"], "2026-12-05T23:59:40+0000");
    assert_eq!(j["completed"], "2026-12-06T00:00:11+0000");
    let r = call(&mut z, "listAsyncJobs", &[], t0());
    assert!(inner(&r)["asyncjobs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|x| x["jobid"] == JOB));
    let r = call(&mut z, "listManagementServers", &[], t0());
    assert_eq!(inner(&r)["count"], 2);
    let r = call(
        &mut z,
        "listVirtualMachines",
        &[("listall", "true"), ("name", "web-940")],
        t0(),
    );
    assert_eq!(inner(&r)["virtualmachine"][0]["instancename"], "i-2-940-VM");
}

#[test]
fn the_job_is_followed_through_rotated_gzipped_and_current_logs() {
    let mut z = zone("job-triage");
    let dir = "/var/log/cloudstack/management";
    let ls = run_line(&mut z, "mgmt1", &format!("ls {dir}"));
    assert_eq!(
        ls.stdout,
        "catalina.out\nmanagement-server.log\nmanagement-server.log.2026-12-04.gz\nmanagement-server.log.2026-12-05.gz\n"
    );
    let gz =
        &z.guest("mgmt1").unwrap().files[&format!("{dir}/management-server.log.2026-12-05.gz")];
    assert_eq!(&gz.gzip.as_ref().unwrap()[..2], &[0x1f, 0x8b], "real gzip");
    let old = run_line(
        &mut z,
        "mgmt1",
        &format!("zgrep job-733 {dir}/management-server.log.2026-12-05.gz"),
    );
    assert_eq!(old.status, 0, "{old:?}");
    let lines: Vec<&str> = old.stdout.lines().collect();
    assert!(
        lines[0].starts_with("2026-12-05 23:59:40,535 DEBUG [o.a.c.f.j.i.AsyncJobManagerImpl]"),
        "{}",
        lines[0]
    );
    assert!(lines[0].contains("submit async job-733, details: AsyncJobVO {id:733,"));
    assert!(lines[1].contains("Executing AsyncJobVO {id:733, userId: 2, accountId: 2, instanceType: VirtualMachine, instanceId: 940, cmd: org.apache.cloudstack.api.command.user.vm.DestroyVMCmd"));
    assert!(
        !old.stdout.contains("WARN"),
        "the warning is after midnight"
    );
    let now = run_line(
        &mut z,
        "mgmt1",
        &format!("grep job-733 {dir}/management-server.log"),
    );
    let lines: Vec<&str> = now.stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{}", now.stdout);
    assert!(lines[0].contains(" WARN  [c.c.v.VirtualMachineManagerImpl] "));
    assert!(lines[0].contains("Unable to stop vm VM[User|i-2-940-VM] on host id 49: "));
    assert!(lines[1].contains(" ERROR [c.c.a.ApiAsyncJobDispatcher] "));
    assert!(lines[2].ends_with("Complete async job-733, jobStatus: FAILED, resultCode: 530, result: org.apache.cloudstack.api.response.ExceptionResponse/null/{\"uuidList\":[],\"errorcode\":530,\"errortext\":\"Failed to destroy vm\"}"));
    // zcat prints the whole day; a plain file is refused
    let all = run_line(
        &mut z,
        "mgmt1",
        &format!("zcat {dir}/management-server.log.2026-12-05.gz"),
    );
    assert!(all.stdout.lines().count() > 100, "noise around the job");
    assert!(all
        .stdout
        .contains("Complete async job-582, jobStatus: SUCCEEDED"));
    assert!(!all.stdout.contains("job-583"), "odd numbers ran on mgmt2");
    let bad = run_line(
        &mut z,
        "mgmt1",
        &format!("zcat {dir}/management-server.log"),
    );
    assert_eq!(bad.status, 1);
    assert_eq!(
        bad.stderr,
        format!("gzip: {dir}/management-server.log: not in gzip format\n")
    );
    // the second server has the forwarded command, not the job's number
    let peer = run_line(&mut z, "mgmt2", &format!("zgrep -c job-733 {dir}/management-server.log.2026-12-05.gz {dir}/management-server.log"));
    assert_eq!(
        peer.stdout,
        format!("{dir}/management-server.log.2026-12-05.gz:0\n{dir}/management-server.log:0\n")
    );
    let fwd = run_line(&mut z, "mgmt2", &format!("zgrep i-2-940-VM {dir}/management-server.log.2026-12-05.gz {dir}/management-server.log"));
    assert_eq!(fwd.stdout.lines().count(), 2, "{}", fwd.stdout);
    assert!(fwd.stdout.contains("WARN  [c.c.a.m.AgentAttache]"));
}

fn host_state(z: &mut Zone, name: &str, now: jiff::Timestamp) -> String {
    host_item(z, name, now)["state"]
        .as_str()
        .unwrap()
        .to_string()
}

#[test]
fn a_restarted_agent_connects_over_the_zones_clock() {
    let mut z = zone("agent-disconnected");
    assert_eq!(host_state(&mut z, "kvm02", t0()), "Disconnected");
    let out = run_line(&mut z, "kvm02", "systemctl restart cloudstack-agent");
    assert_eq!(out.status, 0);
    assert_eq!(host_state(&mut z, "kvm02", at(700)), "Disconnected");
    assert_eq!(host_state(&mut z, "kvm02", at(750)), "Connecting");
    assert_eq!(host_state(&mut z, "kvm02", at(2999)), "Connecting");
    assert_eq!(host_state(&mut z, "kvm02", at(3000)), "Up");
    // a stop is seen at once; a start of a running agent changes nothing
    z.advance(at(5000));
    run_line(&mut z, "kvm01", "systemctl start cloudstack-agent");
    assert_eq!(host_state(&mut z, "kvm01", at(5001)), "Up");
    run_line(&mut z, "kvm01", "service cloudstack-agent stop");
    assert_eq!(host_state(&mut z, "kvm01", at(5002)), "Disconnected");
    run_line(&mut z, "kvm01", "systemctl start cloudstack-agent.service");
    assert_eq!(host_state(&mut z, "kvm01", at(8002)), "Up");
}

#[test]
fn agent_stays_down_keeps_the_host_disconnected() {
    let mut z = zone("agent-disconnected");
    z.faults_mut().agent_stays_down = vec!["kvm02".into()];
    z.advance(t0());
    run_line(&mut z, "kvm02", "systemctl restart cloudstack-agent");
    assert_eq!(host_state(&mut z, "kvm02", at(1000)), "Connecting");
    assert_eq!(host_state(&mut z, "kvm02", at(3000)), "Disconnected");
    let out = run_line(&mut z, "kvm02", "systemctl is-active cloudstack-agent");
    assert_eq!((out.stdout.as_str(), out.status), ("failed\n", 3));
    // the fault names kvm02 only
    run_line(&mut z, "kvm03", "systemctl restart cloudstack-agent");
    assert_eq!(host_state(&mut z, "kvm03", at(6000)), "Up");
}
