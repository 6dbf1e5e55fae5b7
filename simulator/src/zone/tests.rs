//! The zone's behaviour, command by command, on a synthetic clock.

use std::collections::BTreeMap;

use serde_json::Value;

use super::*;

fn t0() -> jiff::Timestamp {
    "2030-01-01T00:00:00Z".parse().unwrap()
}

fn at(ms: i64) -> jiff::Timestamp {
    t0() + jiff::SignedDuration::from_millis(ms)
}

fn zone(name: &str) -> Zone {
    Zone::new(&Scenario::builtin(name).unwrap())
}

fn call(z: &mut Zone, command: &str, args: &[(&str, &str)], now: jiff::Timestamp) -> Reply {
    let params: BTreeMap<String, String> = args
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    z.handle(command, &params, &Faults::default(), now)
}

fn inner(r: &Reply) -> &Value {
    r.body.as_object().unwrap().values().next().unwrap()
}

fn routers(z: &mut Zone, now: jiff::Timestamp) -> Vec<(String, String)> {
    let r = call(z, "listRouters", &[], now);
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

fn job(z: &mut Zone, r: &Reply, now: jiff::Timestamp) -> Value {
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

#[test]
fn every_scenario_builds() {
    for name in Scenario::builtin_names() {
        let z = zone(name);
        assert!(!z.world().vms.is_empty(), "{name}");
    }
}

#[test]
fn healthy_has_one_primary_and_vr_backup_loop_has_none() {
    let mut z = zone("healthy");
    let states: Vec<String> = routers(&mut z, t0()).into_iter().map(|r| r.1).collect();
    assert_eq!(states, vec!["PRIMARY", "BACKUP"]);
    let mut z = zone("vr-backup-loop");
    assert_eq!(
        routers(&mut z, t0()),
        vec![
            ("r-930-VM".to_string(), "BACKUP".to_string()),
            ("r-931-VM".to_string(), "BACKUP".to_string())
        ]
    );
    let g = z.guest("r-930-VM").unwrap();
    assert!(!g.link_up("eth1"));
    assert!(!g.files.contains_key("/etc/keepalived/keepalived.conf"));
    assert!(!g.active("keepalived"));
}

#[test]
fn paging_across_three_pages() {
    let mut z = zone("healthy");
    let all = call(&mut z, "listConfigurations", &[], t0());
    let total = inner(&all)["count"].as_u64().unwrap();
    assert_eq!(total, 10);
    let mut seen = Vec::new();
    for page in ["1", "2", "3"] {
        let r = call(
            &mut z,
            "listConfigurations",
            &[("page", page), ("pagesize", "4")],
            t0(),
        );
        assert_eq!(inner(&r)["count"], 10, "count is the total, not the page");
        for c in inner(&r)["configuration"].as_array().unwrap() {
            seen.push(c["name"].as_str().unwrap().to_string());
        }
    }
    let mut want: Vec<String> = inner(&all)["configuration"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(seen, want, "pages are disjoint and complete, in order");
    want.dedup();
    assert_eq!(want.len(), 10);
}

#[test]
fn validation_errors_are_431() {
    let mut z = zone("healthy");
    let r = call(&mut z, "listTrafficTypes", &[], t0());
    assert_eq!(r.status, 431);
    assert_eq!(
        inner(&r)["errortext"],
        "Unable to execute API command listtraffictypes due to missing parameter physicalnetworkid"
    );
    assert!(r.body.get("listtraffictypesresponse").is_some());
    let r = call(&mut z, "listRouters", &[("id", "no-such-id")], t0());
    assert_eq!(r.status, 431);
    assert!(inner(&r)["errortext"]
        .as_str()
        .unwrap()
        .contains("Invalid parameter id value=no-such-id"));
    for args in [
        vec![("page", "1")],
        vec![("pagesize", "10")],
        vec![("page", "1"), ("pagesize", "501")],
        vec![("page", "1"), ("pagesize", "-1")],
        vec![("listall", "maybe")],
    ] {
        let r = call(&mut z, "listRouters", &args, t0());
        assert_eq!(r.status, 431, "{args:?}: {:?}", r.body);
    }
    let r = call(
        &mut z,
        "updateConfiguration",
        &[("name", "no.such.setting"), ("value", "1")],
        t0(),
    );
    assert_eq!(r.status, 431);
    let r = call(
        &mut z,
        "updateConfiguration",
        &[
            ("name", "secstorage.allowed.internal.sites"),
            ("value", "0.0.0.0"),
        ],
        t0(),
    );
    assert_eq!(r.status, 431);
}

#[test]
fn empty_lists_and_account_scope() {
    let mut z = zone("healthy");
    let r = call(&mut z, "listVPCs", &[], t0());
    assert_eq!(r.body, serde_json::json!({"listvpcsresponse": {}}));
    let r = call(&mut z, "listVPCs", &[("listall", "true")], t0());
    assert_eq!(inner(&r)["count"], 1);
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
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(job(&mut z, &r, at(100))["jobstatus"], 0, "still running");
    assert_eq!(z.world().physnets[0].vlan, "");
    let done = job(&mut z, &r, at(DEFAULT_JOB_MS as i64));
    assert_eq!(done["jobstatus"], 1);
    assert_eq!(done["jobresult"]["physicalnetwork"]["vlan"], "1000-1099");
    let v = vpc(&z);
    let start = at(2000);
    let r = call(&mut z, "restartVPC", &[("id", &v)], start);
    assert_eq!(
        routers(&mut z, start + jiff::SignedDuration::from_millis(10))
            .iter()
            .filter(|r| r.1 == "PRIMARY")
            .count(),
        0
    );
    let done = job(
        &mut z,
        &r,
        start + jiff::SignedDuration::from_millis(DEFAULT_JOB_MS as i64),
    );
    assert_eq!(done["jobstatus"], 1, "{done}");
    assert_eq!(done["jobresult"], serde_json::json!({"success": true}));
    let states: Vec<String> = routers(&mut z, at(5000)).into_iter().map(|r| r.1).collect();
    assert_eq!(states, vec!["PRIMARY", "BACKUP"]);
    let g = z.guest("r-930-VM").unwrap();
    assert!(g.files.contains_key("/etc/keepalived/keepalived.conf"));
    assert!(g.link_up("eth1") && g.active("dnsmasq"));
    assert!(z
        .world()
        .networks
        .iter()
        .all(|n| n.vlan.is_some_and(|v| (1000..=1099).contains(&v))));
}

#[test]
fn restarting_without_a_range_fails_with_533_and_changes_nothing() {
    let mut z = zone("vr-backup-loop");
    let v = vpc(&z);
    let before = z.snapshot()["world"].clone();
    let r = call(&mut z, "restartVPC", &[("id", &v)], t0());
    let done = job(&mut z, &r, at(DEFAULT_JOB_MS as i64));
    assert_eq!(done["jobstatus"], 2);
    assert_eq!(done["jobresultcode"], 533);
    assert!(done["jobresult"]["errortext"]
        .as_str()
        .unwrap()
        .contains("no guest VLAN range"));
    assert_eq!(z.snapshot()["world"], before);
}

#[test]
fn removing_a_range_with_allocated_vlans_is_refused() {
    let mut z = zone("healthy");
    let pn = physnet(&z);
    let r = call(
        &mut z,
        "updatePhysicalNetwork",
        &[("id", &pn), ("vlan", "")],
        t0(),
    );
    assert_eq!(r.status, 431);
    assert!(inner(&r)["errortext"].as_str().unwrap().contains("in use"));
    let r = call(
        &mut z,
        "updatePhysicalNetwork",
        &[("id", &pn), ("vlan", "5-1")],
        t0(),
    );
    assert_eq!(r.status, 431);
    // extending keeps the allocated ones: fine
    let r = call(
        &mut z,
        "updatePhysicalNetwork",
        &[("id", &pn), ("vlan", "1000-1999,3000-3099")],
        t0(),
    );
    assert_eq!(r.status, 200);
}

#[test]
fn failing_jobs_fault() {
    let mut z = zone("healthy");
    let id = z
        .world()
        .vms
        .iter()
        .find(|v| v.name == "r-931-VM")
        .unwrap()
        .id
        .clone();
    let faults = Faults {
        fail_jobs: vec!["rebootRouter".into()],
        job_error_text: Some("host kvm02 is unreachable".into()),
        ..Faults::default()
    };
    let params: BTreeMap<String, String> = [("id".to_string(), id)].into();
    let r = z.handle("rebootRouter", &params, &faults, t0());
    let states = routers(&mut z, at(10));
    assert!(
        states.contains(&("r-931-VM".to_string(), "UNKNOWN".to_string())),
        "stopping: {states:?}"
    );
    let done = job(&mut z, &r, at(DEFAULT_JOB_MS as i64));
    assert_eq!(done["jobstatus"], 2);
    assert_eq!(done["jobresult"]["errortext"], "host kvm02 is unreachable");
    assert_eq!(
        routers(&mut z, at(DEFAULT_JOB_MS as i64))[1].1,
        "BACKUP",
        "back as it was"
    );
}

#[test]
fn ssvm_needs_the_setting_and_a_recreate() {
    let mut z = zone("ssvm-broken");
    let ssvm = |z: &Zone| {
        z.world()
            .vms
            .iter()
            .find(|v| v.name.starts_with("s-") && v.state != "Destroyed")
            .cloned()
            .unwrap()
    };
    assert!(!z.world().ssvm_can_download(&ssvm(&z)));
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
        !z.world().ssvm_can_download(&ssvm(&z)),
        "the running SSVM still has the old value"
    );
    let old = ssvm(&z);
    let r = call(&mut z, "destroySystemVm", &[("id", &old.id)], t0());
    let done = job(&mut z, &r, at(DEFAULT_JOB_MS as i64));
    assert_eq!(done["jobstatus"], 1, "{done}");
    let new = ssvm(&z);
    assert_ne!(new.id, old.id);
    assert_eq!(new.name, "s-3-VM");
    assert_eq!(new.state, "Starting");
    let list = call(
        &mut z,
        "listSystemVms",
        &[("systemvmtype", "secondarystoragevm")],
        at(DEFAULT_JOB_MS as i64 + 1),
    );
    assert_eq!(inner(&list)["systemvm"][0]["agentstate"], "Disconnected");
    z.advance(at(2 * DEFAULT_JOB_MS as i64));
    let new = ssvm(&z);
    assert_eq!(new.state, "Running");
    assert!(z.world().ssvm_can_download(&new));
}

#[test]
fn a_guest_change_shows_in_the_api_at_once() {
    let mut z = zone("healthy");
    z.guest_mut("r-931-VM").unwrap().set_link("eth1", true);
    let states: Vec<String> = routers(&mut z, t0()).into_iter().map(|r| r.1).collect();
    assert_eq!(
        states,
        vec!["PRIMARY", "PRIMARY"],
        "split brain, as checkrouter.sh would say"
    );
    z.guest_mut("r-930-VM")
        .unwrap()
        .set_service("keepalived", "failed");
    assert_eq!(routers(&mut z, t0())[0].1, "FAULT");
}
