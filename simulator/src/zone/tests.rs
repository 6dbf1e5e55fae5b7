//! The zone's behaviour, command by command, on a synthetic clock.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::*;

pub(super) fn t0() -> jiff::Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

/// `t0` plus `ms` milliseconds.
pub(super) fn at(ms: u64) -> jiff::Timestamp {
    t0() + jiff::SignedDuration::from_millis(ms as i64)
}

pub(super) fn zone(name: &str) -> Zone {
    Zone::new(&Scenario::builtin(name).unwrap())
}

fn params(args: &[(&str, &str)]) -> BTreeMap<String, String> {
    args.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

pub(super) fn call(
    z: &mut Zone,
    command: &str,
    args: &[(&str, &str)],
    now: jiff::Timestamp,
) -> Reply {
    z.handle(command, &params(args), &Faults::default(), now)
}

/// The single value inside the envelope.
pub(super) fn inner(r: &Reply) -> &Value {
    r.body.as_object().unwrap().values().next().unwrap()
}

fn errortext(r: &Reply) -> String {
    inner(r)["errortext"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// (name, redundantstate) of every listed router.
fn routers(z: &mut Zone, now: jiff::Timestamp) -> Vec<(String, String)> {
    let r = call(z, "listRouters", &[("listall", "true")], now);
    inner(&r)["router"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_string(),
                r["redundantstate"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

fn states(z: &mut Zone, now: jiff::Timestamp) -> Vec<String> {
    routers(z, now).into_iter().map(|r| r.1).collect()
}

/// The job record of an async reply, queried at `now`.
fn job(z: &mut Zone, r: &Reply, now: jiff::Timestamp) -> Value {
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = inner(r)["jobid"].as_str().expect("a jobid").to_string();
    let q = call(z, "queryAsyncJobResult", &[("jobid", &id)], now);
    assert_eq!(q.status, 200, "{:?}", q.body);
    inner(&q).clone()
}

fn physnet(z: &Zone) -> String {
    z.world().physnets[0].id.clone()
}

fn vpc(z: &Zone) -> String {
    z.world().vpcs[0].id.clone()
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

fn live_ssvm(z: &Zone) -> model::Vm {
    z.world()
        .vms
        .iter()
        .find(|v| v.is_ssvm() && v.live())
        .cloned()
        .unwrap()
}

const JOB: u64 = DEFAULT_JOB_MS;

#[test]
fn the_zone_is_send_clone_debug_and_reproducible() {
    fn assert_traits<T: Send + Sync + Clone + std::fmt::Debug>() {}
    assert_traits::<Zone>();
    for name in Scenario::builtin_names() {
        assert_eq!(zone(name).snapshot(), zone(name).snapshot(), "{name}");
    }
}

#[test]
fn every_shipped_scenario_breaks_what_it_says() {
    let healthy = zone("healthy");
    let kvm01 = &healthy.guest("kvm01").unwrap().ovs["cloudbr1"];
    assert!(kvm01.ports.contains(&"vnet3".to_string()));
    assert!(kvm01.flows.contains(&model::port_flow("vnet3")));
    assert!(healthy.ssvm_can_download("s-1-VM"));
    let catalina = &healthy.guest("mgmt1").unwrap().files[model::CATALINA_OUT];
    assert_eq!(
        (
            catalina.mode,
            catalina.owner.as_str(),
            catalina.group.as_str()
        ),
        (0o644, "cloud", "cloud")
    );

    let z = zone("ovs-port-missing");
    let kvm01 = &z.guest("kvm01").unwrap().ovs["cloudbr1"];
    assert!(!kvm01.ports.contains(&"vnet3".to_string()));
    assert!(!kvm01.flows.contains(&model::port_flow("vnet3")));
    assert!(
        kvm01.ports.contains(&"vnet1".to_string()),
        "the rest is there"
    );

    let z = zone("catalina-perms");
    let catalina = &z.guest("mgmt1").unwrap().files[model::CATALINA_OUT];
    assert_eq!((catalina.mode, catalina.owner.as_str()), (0o600, "root"));

    let mut z = zone("dnsmasq-dead");
    assert_eq!(
        z.guest("r-930-VM").unwrap().service("dnsmasq"),
        Some(ServiceState::Failed)
    );
    assert_eq!(states(&mut z, t0()), ["PRIMARY", "BACKUP"]);
    let r = call(
        &mut z,
        "listRouters",
        &[("name", "r-930-VM"), ("listall", "true")],
        t0(),
    );
    assert_eq!(inner(&r)["router"][0]["healthchecksfailed"], true);

    let z = zone("ssvm-broken");
    assert!(!z.ssvm_can_download("s-1-VM"));
    let check = z.ssvm_check("s-1-VM").unwrap();
    assert!(
        check.contains("ERROR: 10.20.0.15 is not covered"),
        "{check}"
    );
}

#[test]
fn healthy_has_one_primary_and_vr_backup_loop_has_none() {
    let mut z = zone("healthy");
    assert_eq!(states(&mut z, t0()), ["PRIMARY", "BACKUP"]);
    let g = z.guest("r-930-VM").unwrap();
    assert!(g.has_file(model::KEEPALIVED_CONF) && g.active("dnsmasq") && g.link_up("eth1"));
    assert_eq!(z.checkrouter("r-931-VM").unwrap(), "Status: BACKUP\n");

    let mut z = zone("vr-backup-loop");
    assert_eq!(
        routers(&mut z, t0()),
        [
            ("r-930-VM".to_string(), "BACKUP".to_string()),
            ("r-931-VM".to_string(), "BACKUP".to_string())
        ]
    );
    for r in ["r-930-VM", "r-931-VM"] {
        let g = z.guest(r).unwrap();
        assert!(!g.link_up("eth1"));
        assert!(!g.has_file(model::KEEPALIVED_CONF));
        assert!(!g.active("keepalived"));
    }
    let r = call(&mut z, "listNetworks", &[("listall", "true")], t0());
    for n in inner(&r)["network"].as_array().unwrap() {
        assert_eq!(n["vlan"], Value::Null, "{n}");
        assert_eq!(n["state"], "Allocated");
    }
}

#[test]
fn paging_across_three_pages() {
    let mut z = zone("healthy");
    let all = call(&mut z, "listConfigurations", &[], t0());
    let total = inner(&all)["count"].as_u64().unwrap();
    assert_eq!(total, 20);
    let names = |r: &Reply| -> Vec<String> {
        inner(r)["configuration"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    let mut seen = Vec::new();
    for (page, len) in [("1", 7), ("2", 7), ("3", 6)] {
        let r = call(
            &mut z,
            "listConfigurations",
            &[("page", page), ("pagesize", "7")],
            t0(),
        );
        assert_eq!(
            inner(&r)["count"],
            total,
            "count is the total, not the page"
        );
        assert_eq!(names(&r).len(), len);
        seen.extend(names(&r));
    }
    assert_eq!(
        seen,
        names(&all),
        "pages are disjoint and complete, in order"
    );
    let r = call(
        &mut z,
        "listConfigurations",
        &[("page", "4"), ("pagesize", "7")],
        t0(),
    );
    assert_eq!(r.body, json!({"listconfigurationsresponse": {"count": 20}}));
    let r = call(&mut z, "listConfigurations", &[("pagesize", "-1")], t0());
    assert_eq!(names(&r).len(), 20);

    // without paging, at most default.page.size rows
    let r = call(
        &mut z,
        "updateConfiguration",
        &[("name", "default.page.size"), ("value", "5")],
        t0(),
    );
    assert_eq!(r.status, 200);
    let r = call(&mut z, "listConfigurations", &[], t0());
    assert_eq!(
        (inner(&r)["count"].as_u64(), names(&r).len()),
        (Some(20), 5)
    );
    let r = call(
        &mut z,
        "listConfigurations",
        &[("page", "1"), ("pagesize", "6")],
        t0(),
    );
    assert_eq!(r.status, 431);
    assert_eq!(
        errortext(&r),
        "Page size can't exceed max allowed page size value: 5"
    );
}

#[test]
fn list_filters() {
    let mut z = zone("healthy");
    // listConfigurations `name` is a substring match, as on a real server
    let r = call(
        &mut z,
        "listConfigurations",
        &[("name", "network.gc")],
        t0(),
    );
    assert_eq!(inner(&r)["count"], 2);
    let r = call(
        &mut z,
        "listSystemVms",
        &[("systemvmtype", "consoleproxy")],
        t0(),
    );
    assert_eq!(inner(&r)["systemvm"][0]["name"], "v-2-VM");
    let r = call(&mut z, "listHosts", &[("type", "Routing")], t0());
    assert_eq!(inner(&r)["count"], 2);
    let r = call(&mut z, "listHosts", &[("type", "SecondaryStorageVM")], t0());
    let agent = inner(&r)["host"][0]["id"].as_str().unwrap().to_string();
    let r = call(&mut z, "listHosts", &[("id", &agent)], t0());
    assert_eq!(inner(&r)["host"][0]["name"], "s-1-VM");
    let web = z.world().networks[0].id.clone();
    let r = call(
        &mut z,
        "listRouters",
        &[
            ("networkid", &web),
            ("state", "running"),
            ("listall", "true"),
        ],
        t0(),
    );
    assert_eq!(inner(&r)["count"], 2);
    let r = call(
        &mut z,
        "listVirtualMachines",
        &[("networkid", &web), ("listall", "true")],
        t0(),
    );
    assert_eq!(inner(&r)["virtualmachine"][0]["name"], "web-vm1");
    let vm = vm_id(&z, "web-vm1");
    let r = call(&mut z, "listNics", &[("virtualmachineid", &vm)], t0());
    let nic = &inner(&r)["nic"][0];
    assert_eq!(nic["networkid"], web.as_str());
    assert_eq!(nic["broadcasturi"], "vlan://1000");
    let nicid = nic["id"].as_str().unwrap().to_string();
    let r = call(
        &mut z,
        "listNics",
        &[("virtualmachineid", &vm), ("nicid", &nicid)],
        t0(),
    );
    assert_eq!(inner(&r)["count"], 1);
    let pn = physnet(&z);
    let r = call(
        &mut z,
        "listTrafficTypes",
        &[("physicalnetworkid", &pn)],
        t0(),
    );
    let types: Vec<&str> = inner(&r)["traffictype"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["traffictype"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Guest", "Public", "Management", "Storage"]);
    let r = call(&mut z, "listCapacity", &[("type", "7")], t0());
    assert_eq!(inner(&r)["capacity"][0]["capacityused"], 2);
    assert_eq!(inner(&r)["capacity"][0]["capacitytotal"], 1000);
    let r = call(&mut z, "listManagementServers", &[], t0());
    assert_eq!(inner(&r)["managementserver"][0]["state"], "Up");
}

#[test]
fn validation_errors_are_431() {
    let mut z = zone("healthy");
    let r = call(&mut z, "listTrafficTypes", &[], t0());
    assert_eq!(r.status, 431);
    assert_eq!(
        r.body,
        json!({"listtraffictypesresponse": {"uuidList": [], "errorcode": 431, "cserrorcode": 9999,
            "errortext": "Unable to execute API command listtraffictypes due to missing parameter physicalnetworkid"}})
    );
    let r = call(&mut z, "listRouters", &[("id", "no-such-id")], t0());
    assert_eq!(r.status, 431);
    assert_eq!(
        errortext(&r),
        "Unable to execute API command listrouters due to invalid value. Invalid parameter id value=no-such-id due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class."
    );
    assert_eq!(inner(&r)["cserrorcode"], 4350);
    // an id of the wrong kind names nothing the command can use
    let v = vpc(&z);
    let r = call(&mut z, "listRouters", &[("id", &v)], t0());
    assert_eq!(r.status, 431);
    for (args, text) in [
        (
            vec![("page", "1")],
            "\"pagesize\" parameter is required when \"page\" is specified",
        ),
        (
            vec![("pagesize", "10")],
            "\"page\" parameter is required when \"pagesize\" is specified",
        ),
        (
            vec![("page", "1"), ("pagesize", "501")],
            "Page size can't exceed max allowed page size value: 500",
        ),
        (
            vec![("page", "1"), ("pagesize", "-1")],
            "Can't specify page parameter when pagesize is -1 (Unlimited)",
        ),
        (
            vec![("listall", "maybe")],
            "Invalid parameter listall value=maybe",
        ),
        (
            vec![("page", "x"), ("pagesize", "1")],
            "Invalid parameter page value=x",
        ),
    ] {
        let r = call(&mut z, "listRouters", &args, t0());
        assert_eq!(r.status, 431, "{args:?}: {:?}", r.body);
        assert!(errortext(&r).contains(text), "{args:?}: {}", errortext(&r));
        assert!(r.body.get("listroutersresponse").is_some());
    }
    let r = call(
        &mut z,
        "queryAsyncJobResult",
        &[("jobid", "00000000-0000-4000-a000-000000000000")],
        t0(),
    );
    assert_eq!(r.status, 431);
    let r = call(&mut z, "noSuchCommand", &[], t0());
    assert_eq!(r.status, 401);
    assert!(r.body.get("errorresponse").is_some());
}

#[test]
fn update_configuration() {
    let mut z = zone("healthy");
    let r = call(
        &mut z,
        "updateConfiguration",
        &[("name", "no.such.setting"), ("value", "1")],
        t0(),
    );
    assert_eq!(r.status, 431);
    assert!(r.body.get("updateconfigurationresponse").is_some());
    for bad in ["0.0.0.0", "10.20.0.0/16,0.0.0.0/0", "ten.twenty/16"] {
        let r = call(
            &mut z,
            "updateConfiguration",
            &[
                ("name", "secstorage.allowed.internal.sites"),
                ("value", bad),
            ],
            t0(),
        );
        assert_eq!(r.status, 431, "{bad}");
    }
    let r = call(
        &mut z,
        "updateConfiguration",
        &[("name", "network.gc.interval"), ("value", "700")],
        t0(),
    );
    assert_eq!(r.status, 200);
    let c = &r.body["updateconfigurationresponse"]["configuration"];
    assert_eq!(
        (c["name"].as_str(), c["value"].as_str()),
        (Some("network.gc.interval"), Some("700"))
    );
    assert_eq!(c["isdynamic"], false);
    assert_eq!(z.world().setting("network.gc.interval"), "700");
}

#[test]
fn empty_lists_and_account_scope() {
    let mut z = zone("healthy");
    for command in [
        "listVPCs",
        "listNetworks",
        "listVirtualMachines",
        "listRouters",
    ] {
        let r = call(&mut z, command, &[], t0());
        let key = format!("{}response", command.to_ascii_lowercase());
        assert_eq!(r.body, json!({ key: {} }), "{command}: not the caller's");
    }
    let r = call(&mut z, "listVPCs", &[("listall", "true")], t0());
    assert_eq!(inner(&r)["count"], 1);
    assert_eq!(inner(&r)["vpc"][0]["network"].as_array().unwrap().len(), 2);
    let r = call(&mut z, "listVPCs", &[("account", "ops")], t0());
    assert_eq!(inner(&r)["count"], 1);
    // listRouters as 4.18's buildACLSearchParameters scopes it for a root admin
    let domain = z.world().domain_id.clone();
    let router = vm_id(&z, "r-930-VM");
    for (args, count) in [
        (vec![("listall", "true")], 2),
        (vec![("account", "ops")], 2),
        (vec![("account", "ops"), ("domainid", domain.as_str())], 2),
        (vec![("domainid", domain.as_str())], 2),
        (vec![("account", "admin"), ("listall", "true")], 0),
        (vec![("id", router.as_str())], 1),
    ] {
        let r = call(&mut z, "listRouters", &args, t0());
        assert_eq!(r.status, 200, "{args:?}");
        assert_eq!(inner(&r)["count"].as_u64().unwrap_or(0), count, "{args:?}");
    }
    let r = call(&mut z, "listRouters", &[("account", "nobody")], t0());
    assert_eq!(r.status, 431);
    assert_eq!(
        errortext(&r),
        "could not find account nobody in domain Domain:1/"
    );
    let r = call(&mut z, "listAsyncJobs", &[], t0());
    assert_eq!(r.body, json!({"listasyncjobsresponse": {}}));
}

#[test]
fn adding_the_range_and_restarting_the_vpc_fixes_the_backup_loop() {
    let mut z = zone("vr-backup-loop");
    let pn = physnet(&z);
    let r = call(
        &mut z,
        "updatePhysicalNetwork",
        &[("id", &pn), ("vlan", "1000-1099")],
        t0(),
    );
    let pending = job(&mut z, &r, at(100));
    assert_eq!(pending["jobstatus"], 0, "still running");
    assert!(pending.get("jobresult").is_none());
    assert_eq!(
        pending["cmd"],
        "org.apache.cloudstack.api.command.admin.network.UpdatePhysicalNetworkCmd"
    );
    assert_eq!(pending["created"], "2030-01-01T00:00:00+0000");
    let listed = call(&mut z, "listPhysicalNetworks", &[], at(100));
    assert_eq!(inner(&listed)["physicalnetwork"][0]["jobstatus"], 0);
    assert_eq!(z.world().physnets[0].vlan, "");
    let done = job(&mut z, &r, at(JOB));
    assert_eq!(done["jobstatus"], 1);
    assert_eq!(done["jobresult"]["physicalnetwork"]["vlan"], "1000-1099");

    let v = vpc(&z);
    let start = 2000;
    let r = call(&mut z, "restartVPC", &[("id", &v)], at(start));
    assert_eq!(states(&mut z, at(start + 10)), ["BACKUP", "BACKUP"]);
    assert_eq!(job(&mut z, &r, at(start + JOB - 1))["jobstatus"], 0);
    let done = job(&mut z, &r, at(start + JOB));
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert_eq!(done["jobresult"], json!({"success": true}));
    assert_eq!(done["jobinstancetype"], "Vpc");
    assert_eq!(states(&mut z, at(5000)), ["PRIMARY", "BACKUP"]);
    let g = z.guest("r-930-VM").unwrap();
    assert!(g.has_file(model::KEEPALIVED_CONF));
    assert!(g.link_up("eth1") && g.active("dnsmasq") && g.active("keepalived"));
    let g = z.guest("r-931-VM").unwrap();
    assert!(g.has_file(model::KEEPALIVED_CONF) && g.active("keepalived"));
    assert!(!g.link_up("eth1") && !g.active("dnsmasq"));
    assert!(g.link_up("eth2") && g.link_up("eth3"), "a NIC per tier");
    let tags: Vec<Option<u32>> = z.world().networks.iter().map(|n| n.vlan).collect();
    assert_eq!(tags, [Some(1000), Some(1001)]);
    let r = call(&mut z, "listAsyncJobs", &[], at(5000));
    assert_eq!(inner(&r)["count"], 2);
    assert!(inner(&r)["asyncjobs"][1]["completed"].is_string());
}

#[test]
fn restarting_without_a_range_fails_with_533_and_changes_nothing() {
    let mut z = zone("vr-backup-loop");
    let v = vpc(&z);
    let before = z.snapshot()["world"].clone();
    let r = call(
        &mut z,
        "restartVPC",
        &[("id", &v), ("cleanup", "true")],
        t0(),
    );
    let done = job(&mut z, &r, at(JOB));
    assert_eq!(done["jobstatus"], 2);
    assert_eq!(done["jobresultcode"], 533);
    assert_eq!(done["jobresult"]["errorcode"], 533);
    let text = done["jobresult"]["errortext"].as_str().unwrap();
    assert!(
        text.contains("Unable to allocate a guest VLAN") && text.contains("no guest VLAN range"),
        "{text}"
    );
    assert_eq!(z.snapshot()["world"], before);
    // a network restart fails the same way
    let web = z.world().networks[0].id.clone();
    let r = call(&mut z, "restartNetwork", &[("id", &web)], at(JOB));
    assert_eq!(job(&mut z, &r, at(2 * JOB))["jobresultcode"], 533);
}

#[test]
fn vlan_ranges_are_validated_and_allocated_ones_kept() {
    let mut z = zone("healthy");
    let pn = physnet(&z);
    // every refusal arrives as a failed job (jobstatus 2, jobresultcode 431), nothing changed
    let refused = |z: &mut Zone, vlan: &str, ms: u64| {
        let r = call(
            z,
            "updatePhysicalNetwork",
            &[("id", &pn), ("vlan", vlan)],
            at(ms),
        );
        assert_eq!(r.status, 200, "{vlan}: {:?}", r.body);
        let done = job(z, &r, at(ms + JOB));
        assert_eq!(done["jobstatus"], 2, "{vlan}");
        assert_eq!(done["jobresultcode"], 431, "{vlan}");
        assert_eq!(done["jobresult"]["cserrorcode"], 4350, "{vlan}");
        assert_eq!(z.world().physnets[0].vlan, "1000-1999", "{vlan}");
        done["jobresult"]["errortext"].as_str().unwrap().to_string()
    };
    assert_eq!(
        refused(&mut z, "", 0),
        "physicalnetwork 200 has 2 vnets in use"
    );
    assert_eq!(
        refused(&mut z, "1001-1999", 10),
        "physicalnetwork 200 has allocated vnets in the range 1000-1000"
    );
    assert_eq!(
        refused(&mut z, "1500-2500", 20),
        "physicalnetwork 200 has allocated vnets in the range 1000-1499"
    );
    for (i, bad) in ["2000-1999", "1000-1999,300", "1000-5000", "a-b"]
        .iter()
        .enumerate()
    {
        refused(&mut z, bad, 100 + 10 * i as u64);
    }
    let r = call(
        &mut z,
        "updatePhysicalNetwork",
        &[("id", &pn), ("state", "Broken")],
        at(200),
    );
    let done = job(&mut z, &r, at(200 + JOB));
    assert_eq!(
        done["jobresult"]["errortext"],
        "Unable to resolve state 'Broken' to a supported value {Enabled or Disabled}"
    );
    let mut update = |vlan: &str, now| {
        call(
            &mut z,
            "updatePhysicalNetwork",
            &[("id", &pn), ("vlan", vlan)],
            now,
        )
    };
    assert_eq!(update("1000-1000,1001-1001", at(300)).status, 200);
    let r = update("1000-1999,3000-3099,3100-3100", at(310 + JOB));
    assert_eq!(r.status, 200);
    z.advance(at(310 + 2 * JOB));
    assert_eq!(z.world().physnets[0].vlan, "1000-1999,3000-3100");
}

#[test]
fn failing_jobs_fault() {
    let mut z = zone("healthy");
    let id = vm_id(&z, "r-931-VM");
    let faults = Faults {
        fail_jobs: vec!["rebootRouter".into()],
        job_error_text: Some("host kvm02 is unreachable".into()),
        ..Faults::default()
    };
    let r = z.handle("rebootRouter", &params(&[("id", &id)]), &faults, t0());
    assert_eq!(
        routers(&mut z, at(10))[1],
        ("r-931-VM".to_string(), "UNKNOWN".to_string()),
        "going down"
    );
    let done = job(&mut z, &r, at(JOB));
    assert_eq!(done["jobstatus"], 2);
    assert_eq!(done["jobresultcode"], 530);
    assert_eq!(
        done["jobresult"],
        json!({"uuidList": [], "errorcode": 530, "cserrorcode": 4250, "errortext": "host kvm02 is unreachable"})
    );
    assert_eq!(
        states(&mut z, at(JOB)),
        ["PRIMARY", "BACKUP"],
        "back as it was"
    );
}

#[test]
fn slow_jobs_fault_and_scenario_job_ms() {
    let mut z = zone("healthy");
    let id = vm_id(&z, "v-2-VM");
    let faults = Faults {
        slow_jobs: vec!["*".into()],
        slow_job_ms: 60_000,
        ..Faults::default()
    };
    let r = z.handle("rebootSystemVm", &params(&[("id", &id)]), &faults, t0());
    assert_eq!(job(&mut z, &r, at(59_999))["jobstatus"], 0);
    assert_eq!(job(&mut z, &r, at(60_000))["jobstatus"], 1);

    let mut s = Scenario::builtin("healthy").unwrap();
    s.job_ms = Some(200);
    let mut z = Zone::new(&s);
    let id = vm_id(&z, "v-2-VM");
    let r = call(&mut z, "stopSystemVm", &[("id", &id)], t0());
    assert_eq!(
        job(&mut z, &r, at(200))["jobresult"]["systemvm"]["state"],
        "Stopped"
    );
}

#[test]
fn reboot_shows_stopping_then_starting_and_the_partner_takes_over() {
    let mut z = zone("healthy");
    let id = vm_id(&z, "r-930-VM");
    let r = call(&mut z, "rebootRouter", &[("id", &id)], t0());
    let list = |z: &mut Zone, ms| {
        let r = call(z, "listRouters", &[("id", &id)], at(ms));
        inner(&r)["router"][0].clone()
    };
    let item = list(&mut z, 10);
    assert_eq!(item["state"], "Stopping");
    assert_eq!(item["jobstatus"], 0);
    assert_eq!(item["jobid"], inner(&r)["jobid"]);
    assert_eq!(states(&mut z, at(10)), ["UNKNOWN", "PRIMARY"], "failover");
    assert_eq!(list(&mut z, JOB / 2 + 1)["state"], "Starting");
    let done = job(&mut z, &r, at(JOB));
    assert_eq!(done["jobresult"]["router"]["state"], "Running");
    assert!(list(&mut z, JOB).get("jobid").is_none());
    assert_eq!(states(&mut z, at(JOB)), ["BACKUP", "PRIMARY"], "nopreempt");

    // in the backup loop a reboot changes nothing: the cause remains
    let mut z = zone("vr-backup-loop");
    let id = vm_id(&z, "r-930-VM");
    let r = call(&mut z, "rebootRouter", &[("id", &id)], t0());
    assert_eq!(job(&mut z, &r, at(JOB))["jobstatus"], 1);
    assert_eq!(states(&mut z, at(JOB)), ["BACKUP", "BACKUP"]);
}

#[test]
fn stop_start_and_wrong_state_jobs() {
    let mut z = zone("healthy");
    let id = vm_id(&z, "r-931-VM");
    let r = call(&mut z, "stopRouter", &[("id", &id)], t0());
    // a second job on a busy router fails
    let busy = call(&mut z, "startRouter", &[("id", &id)], at(1));
    assert_eq!(
        job(&mut z, &r, at(JOB))["jobresult"]["router"]["state"],
        "Stopped"
    );
    assert_eq!(job(&mut z, &busy, at(JOB + 1))["jobstatus"], 2);
    let r = call(&mut z, "rebootRouter", &[("id", &id)], at(JOB));
    let failed = job(&mut z, &r, at(3 * JOB));
    assert_eq!(
        (
            failed["jobstatus"].as_u64(),
            failed["jobresultcode"].as_u64()
        ),
        (Some(2), Some(530))
    );
    let r = call(&mut z, "startRouter", &[("id", &id)], at(3 * JOB));
    assert_eq!(job(&mut z, &r, at(4 * JOB))["jobstatus"], 1);
    assert_eq!(states(&mut z, at(4 * JOB)), ["PRIMARY", "BACKUP"]);
    // starting a running router succeeds doing nothing
    let r = call(&mut z, "startRouter", &[("id", &id)], at(4 * JOB));
    assert_eq!(job(&mut z, &r, at(5 * JOB))["jobstatus"], 1);
    assert_eq!(states(&mut z, at(5 * JOB)), ["PRIMARY", "BACKUP"]);
}

#[test]
fn cleanup_restart_replaces_the_routers() {
    let mut z = zone("healthy");
    let v = vpc(&z);
    let r = call(
        &mut z,
        "restartVPC",
        &[("id", &v), ("cleanup", "true")],
        t0(),
    );
    assert_eq!(job(&mut z, &r, at(JOB))["jobstatus"], 1);
    assert_eq!(
        routers(&mut z, at(JOB)),
        [
            ("r-934-VM".to_string(), "PRIMARY".to_string()),
            ("r-935-VM".to_string(), "BACKUP".to_string())
        ]
    );
    assert!(z.guest("r-930-VM").is_none());
    let ports = &z.guest("kvm01").unwrap().ovs["cloudbr1"].ports;
    assert!(
        !ports.contains(&"vnet1".to_string()),
        "old taps gone: {ports:?}"
    );
    assert!(ports.contains(&"vnet3".to_string()), "the VM's tap stays");
}

#[test]
fn ssvm_needs_the_setting_and_a_recreate() {
    let mut z = zone("ssvm-broken");
    assert!(!z.ssvm_can_download("s-1-VM"));
    let r = call(
        &mut z,
        "listSystemVms",
        &[("systemvmtype", "secondarystoragevm")],
        t0(),
    );
    assert!(inner(&r)["systemvm"][0]
        .get("simtemplatedownload")
        .is_none());
    assert!(z.ssvm_check("s-1-VM").unwrap().contains("ERROR:"));
    let r = call(
        &mut z,
        "updateConfiguration",
        &[
            ("name", "secstorage.allowed.internal.sites"),
            ("value", "10.20.0.0/16"),
        ],
        t0(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert!(
        !z.ssvm_can_download("s-1-VM"),
        "the running SSVM still has the old value"
    );
    let old = live_ssvm(&z);
    let next = format!("s-{}-VM", z.world().next_instance);
    let r = call(&mut z, "destroySystemVm", &[("id", &old.id)], t0());
    let done = job(&mut z, &r, at(JOB));
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert_eq!(done["jobresult"]["systemvm"]["state"], "Destroyed");
    let new = live_ssvm(&z);
    assert_ne!(new.id, old.id);
    assert_eq!(new.name, next, "the next instance number");
    let list = |z: &mut Zone, ms| {
        let r = call(
            z,
            "listSystemVms",
            &[("systemvmtype", "secondarystoragevm")],
            at(ms),
        );
        assert_eq!(inner(&r)["count"], 1, "the destroyed one is gone");
        inner(&r)["systemvm"][0].clone()
    };
    let item = list(&mut z, JOB + 1);
    assert_eq!(
        (item["state"].as_str(), item["agentstate"].as_str()),
        (Some("Starting"), Some("Disconnected"))
    );
    let item = list(&mut z, 2 * JOB);
    assert_eq!(
        (item["state"].as_str(), item["agentstate"].as_str()),
        (Some("Running"), Some("Up"))
    );
    assert!(z.ssvm_can_download(&next));
    let check = z.ssvm_check(&next).unwrap();
    assert!(!check.contains("ERROR:"), "{check}");
    let r = call(
        &mut z,
        "listHosts",
        &[("type", "SecondaryStorageVM")],
        at(2 * JOB),
    );
    assert_eq!(inner(&r)["host"][0]["name"], next.as_str());
    assert_eq!(inner(&r)["host"][0]["state"], "Up");
}

#[test]
fn ssvm_reboot_also_picks_the_setting_up() {
    let mut z = zone("ssvm-broken");
    let id = vm_id(&z, "s-1-VM");
    let r = call(&mut z, "rebootSystemVm", &[("id", &id)], t0());
    job(&mut z, &r, at(JOB));
    assert!(
        !z.ssvm_can_download("s-1-VM"),
        "rebooted, but the setting is unchanged"
    );
    call(
        &mut z,
        "updateConfiguration",
        &[
            ("name", "secstorage.allowed.internal.sites"),
            ("value", "10.20.0.8/29,192.168.0.0/24"),
        ],
        at(JOB),
    );
    let r = call(&mut z, "rebootSystemVm", &[("id", &id)], at(JOB));
    assert_eq!(
        job(&mut z, &r, at(2 * JOB))["jobresult"]["systemvm"]["agentstate"],
        "Up"
    );
    assert!(z.ssvm_can_download("s-1-VM"));
}

#[test]
fn a_guest_change_shows_in_the_api_at_once() {
    let mut z = zone("healthy");
    z.guest_mut("r-931-VM").unwrap().set_link("eth1", true);
    assert_eq!(
        states(&mut z, t0()),
        ["PRIMARY", "PRIMARY"],
        "split brain, as checkrouter.sh would say"
    );
    z.guest_mut("r-930-VM")
        .unwrap()
        .set_service("keepalived", ServiceState::Failed);
    assert_eq!(states(&mut z, t0())[0], "FAULT");
    assert_eq!(z.checkrouter("r-930-VM").unwrap(), "Status: FAULT\n");

    let mut z = zone("vr-backup-loop");
    z.guest_mut("r-931-VM").unwrap().set_link("eth1", true);
    z.guest_mut("r-931-VM")
        .unwrap()
        .set_service("keepalived", ServiceState::Active);
    assert_eq!(states(&mut z, t0()), ["BACKUP", "PRIMARY"]);

    let mut z = zone("ssvm-broken");
    z.guest_mut("s-1-VM")
        .unwrap()
        .set_service("cloud", ServiceState::Failed);
    let r = call(
        &mut z,
        "listSystemVms",
        &[("systemvmtype", "secondarystoragevm")],
        t0(),
    );
    assert_eq!(inner(&r)["systemvm"][0]["agentstate"], "Disconnected");
    assert!(z.machines().contains(&"mgmt1".to_string()));
}
