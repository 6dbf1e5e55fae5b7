//! Events, alerts and webhooks in the zone: what each fault and job records, `listEvents` and
//! `listAlerts`, the webhook commands and the delivery queue with its faults.

use serde_json::Value;

use super::tests::{at, call, inner, t0, zone};
use super::*;

/// (type, level, description) of every event `listEvents listall=true` shows, newest first.
fn events(
    z: &mut Zone,
    args: &[(&str, &str)],
    now: jiff::Timestamp,
) -> Vec<(String, String, String)> {
    let mut all = vec![("listall", "true")];
    all.extend_from_slice(args);
    let r = call(z, "listEvents", &all, now);
    assert_eq!(r.status, 200, "{}", r.body);
    inner(&r)["event"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_string();
                    (s("type"), s("level"), s("description"))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn alerts(z: &mut Zone, now: jiff::Timestamp) -> Vec<(u64, String, String)> {
    let r = call(z, "listAlerts", &[], now);
    inner(&r)["alert"]
        .as_array()
        .map(|items| {
            items
                .iter()
                .map(|a| {
                    (
                        a["type"].as_u64().unwrap(),
                        a["name"].as_str().unwrap().to_string(),
                        a["description"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

fn ev(kind: &str, level: &str, text: &str) -> (String, String, String) {
    (kind.into(), level.into(), text.into())
}

#[test]
fn a_healthy_zone_starts_with_no_events_or_alerts() {
    let mut z = zone("healthy");
    let r = call(&mut z, "listEvents", &[("listall", "true")], t0());
    assert_eq!(r.body, serde_json::json!({"listeventsresponse": {}}));
    let r = call(&mut z, "listAlerts", &[], t0());
    assert_eq!(r.body, serde_json::json!({"listalertsresponse": {}}));
}

#[test]
fn the_vr_backup_loop_scenario_is_reported_at_the_first_look() {
    let mut z = zone("vr-backup-loop");
    let got = events(
        &mut z,
        &[("type", "ROUTER.HEALTH.CHECKS"), ("level", "ERROR")],
        t0(),
    );
    let no_primary = "; no router of VPC web-vpc is PRIMARY";
    assert!(
        got.contains(&ev(
            "ROUTER.HEALTH.CHECKS",
            "ERROR",
            &format!(
                "Redundant virtual router r-930-VM just switch from UNKNOWN to BACKUP{no_primary}"
            )
        )),
        "{got:?}"
    );
    assert!(
        got.contains(&ev(
            "ROUTER.HEALTH.CHECKS",
            "ERROR",
            &format!(
                "Redundant virtual router r-931-VM just switch from UNKNOWN to BACKUP{no_primary}"
            )
        )),
        "{got:?}"
    );
    let a = alerts(&mut z, t0());
    assert!(
        a.contains(&(
            9,
            "ALERT.SERVICE.DOMAINROUTER".into(),
            "Redundant virtual router r-930-VM just switch from UNKNOWN to BACKUP".into()
        )),
        "{a:?}"
    );
}

#[test]
fn breaking_a_healthy_vpc_records_the_loss_of_its_primary() {
    let mut z = zone("healthy");
    z.observe(t0());
    let done = z.inject("vr-backup-loop", "web-vpc", at(10)).unwrap();
    assert_eq!(
        done,
        "VPC web-vpc: routers r-930-VM, r-931-VM lost their configuration (BACKUP)"
    );
    let got = events(&mut z, &[], at(20));
    assert_eq!(
        got,
        vec![ev(
            "ROUTER.HEALTH.CHECKS",
            "ERROR",
            "Redundant virtual router r-930-VM just switch from PRIMARY to BACKUP; no router of VPC web-vpc is PRIMARY"
        )]
    );
    let r = call(&mut z, "listEvents", &[("listall", "true")], at(20));
    let e = &inner(&r)["event"][0];
    assert_eq!(e["resourcetype"], "DomainRouter");
    assert_eq!(e["resourcename"], "r-930-VM");
    assert_eq!(e["account"], "ops");
    assert_eq!(e["username"], "system");
    assert_eq!(e["state"], "Completed");
    assert_eq!(e["created"], "2030-01-01T00:00:00+0000");
    assert_eq!(
        z.inject("vr-backup-loop", "nope", at(30)).unwrap_err(),
        "no VPC named nope"
    );
}

#[test]
fn dnsmasq_and_agent_faults_record_health_events_and_alerts() {
    let mut z = zone("healthy");
    z.observe(t0());
    z.inject("dnsmasq-dead", "r-930-VM", at(1)).unwrap();
    z.inject("agent-down", "kvm02", at(2)).unwrap();
    let got = events(&mut z, &[], at(3));
    assert_eq!(
        got,
        vec![
            ev("HA.STATE.TRANSITION", "WARN", "Host kvm02 is Disconnected: its agent lost its connection to the management server"),
            ev("ROUTER.HEALTH.CHECKS", "ERROR", "Health checks failed on router r-930-VM: dns_check, dhcp_check (dnsmasq is not running)"),
        ]
    );
    let router = z
        .world()
        .vms
        .iter()
        .find(|v| v.name == "r-930-VM")
        .unwrap()
        .id
        .clone();
    assert_eq!(
        alerts(&mut z, at(3)),
        vec![
            (
                7,
                "ALERT.COMPUTE.HOST".into(),
                "Host disconnected, name: kvm02 (id:2), availability zone: zone1, pod: pod1".into()
            ),
            (
                9,
                "ALERT.SERVICE.DOMAINROUTER".into(),
                format!("Health checks failed: 1 failing checks on router {router}")
            ),
        ]
    );
    let r = call(&mut z, "listAlerts", &[("type", "7")], at(3));
    assert_eq!(inner(&r)["count"], 1);
    let r = call(&mut z, "listAlerts", &[("keyword", "dnsmasq")], at(3));
    assert_eq!(r.body, serde_json::json!({"listalertsresponse": {}}));
    // the agent comes back over SSH-like commands: the host is Up again after two job lengths
    z.guest_mut("kvm02")
        .unwrap()
        .set_service(AGENT, guest::ServiceState::Active);
    z.agent_command("kvm02", "restart", false);
    let later = events(&mut z, &[("type", "HA.STATE.TRANSITION")], at(10_000));
    assert_eq!(
        later[0],
        ev(
            "HA.STATE.TRANSITION",
            "INFO",
            "Host kvm02 is Up: its agent connected"
        )
    );
}

#[test]
fn a_job_records_started_then_completed_with_its_parent() {
    let mut z = zone("healthy");
    let router = z
        .world()
        .vms
        .iter()
        .find(|v| v.name == "r-931-VM")
        .unwrap()
        .id
        .clone();
    let r = call(&mut z, "rebootRouter", &[("id", &router)], t0());
    assert_eq!(r.status, 200);
    let r = call(
        &mut z,
        "listEvents",
        &[("listall", "true"), ("type", "ROUTER.REBOOT")],
        at(5_000),
    );
    let items = inner(&r)["event"].as_array().unwrap().clone();
    assert_eq!(items.len(), 2, "{items:?}");
    assert_eq!(items[0]["state"], "Completed");
    assert_eq!(
        items[0]["description"],
        "Successfully completed rebooting router: r-931-VM"
    );
    assert_eq!(items[0]["parentid"], items[1]["id"]);
    assert_eq!(items[1]["state"], "Started");
    assert_eq!(items[1]["description"], "rebooting router: r-931-VM");
    assert_eq!(items[1]["resourceid"], router.as_str());
    assert_eq!(items[0]["username"], "admin");
    let start = items[1]["id"].as_str().unwrap();
    let r = call(
        &mut z,
        "listEvents",
        &[("startid", start), ("listall", "true")],
        at(5_000),
    );
    assert_eq!(
        inner(&r)["count"],
        2,
        "startid lists the start event and its children"
    );

    // a failed job ends in ERROR with the job's error text
    z.faults_mut().fail_jobs = vec!["restartVPC".into()];
    let vpc = z.world().vpcs[0].id.clone();
    let faults = z.faults().clone();
    let p = [("id".to_string(), vpc)].into_iter().collect();
    z.handle("restartVPC", &p, &faults, at(6_000));
    let got = events(
        &mut z,
        &[("type", "VPC.RESTART"), ("level", "ERROR")],
        at(9_000),
    );
    assert_eq!(
        got,
        vec![ev(
            "VPC.RESTART",
            "ERROR",
            "Error while restarting VPC: web-vpc. Failed to restartVPC: the simulated zone was told to fail this job"
        )]
    );
}

#[test]
fn events_are_scoped_filtered_and_newest_first() {
    let mut z = zone("healthy");
    let r = call(
        &mut z,
        "updateConfiguration",
        &[("name", "router.check.interval"), ("value", "60")],
        t0(),
    );
    assert_eq!(r.status, 200);
    z.observe(t0());
    z.inject("dnsmasq-dead", "r-930-VM", at(1)).unwrap();
    // the caller's own events by default: the setting, not the user account's router
    let r = call(&mut z, "listEvents", &[], at(2));
    assert_eq!(inner(&r)["count"], 1);
    assert_eq!(inner(&r)["event"][0]["type"], "CONFIGURATION.VALUE.EDIT");
    assert_eq!(
        inner(&r)["event"][0]["description"],
        "Successfully edited configuration value: router.check.interval = 60"
    );
    let r = call(&mut z, "listEvents", &[("account", "ops")], at(2));
    assert_eq!(inner(&r)["event"][0]["type"], "ROUTER.HEALTH.CHECKS");
    let all = events(&mut z, &[], at(2));
    assert_eq!(all.len(), 2);
    assert_eq!(all[0].0, "ROUTER.HEALTH.CHECKS", "newest first");
    assert_eq!(events(&mut z, &[("keyword", "DNSMASQ")], at(2)).len(), 1);
    assert_eq!(
        events(&mut z, &[("startdate", "2030-01-01 00:00:01")], at(2)).len(),
        0
    );
    assert_eq!(events(&mut z, &[("enddate", "2030-01-01")], at(2)).len(), 2);
    let r = call(&mut z, "listEvents", &[("level", "FATAL")], at(2));
    assert_eq!(r.status, 431);
    let r = call(
        &mut z,
        "listEvents",
        &[("startdate", "2030-01-02"), ("enddate", "2030-01-01")],
        at(2),
    );
    assert_eq!(r.status, 431);
}

#[test]
fn the_log_is_bounded_and_strictly_ordered() {
    let mut z = zone("healthy");
    for i in 0..(events::EVENTS_KEPT + 50) {
        let e = events::NewEvent::completed("VM.START", format!("n{i}"), "admin");
        z.record_event(e, t0());
    }
    let kept: Vec<&events::Event> = z.events().collect();
    assert_eq!(kept.len(), events::EVENTS_KEPT);
    assert_eq!(kept[0].description, "n50");
    assert!(
        kept.windows(2).all(|w| w[0].created < w[1].created),
        "strictly increasing"
    );
    let r = call(
        &mut z,
        "listEvents",
        &[("page", "2"), ("pagesize", "3")],
        at(1),
    );
    assert_eq!(inner(&r)["count"], events::EVENTS_KEPT);
    let d: Vec<&str> = inner(&r)["event"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["description"].as_str().unwrap())
        .collect();
    assert_eq!(d, ["n10046", "n10045", "n10044"]);
}

fn webhook(z: &mut Zone, args: &[(&str, &str)]) -> Reply {
    call(z, "createWebhook", args, t0())
}

fn errortext(r: &Reply) -> String {
    inner(r)["errortext"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn webhooks_are_created_checked_listed_updated_and_deleted() {
    let mut z = zone("healthy");
    let r = webhook(
        &mut z,
        &[
            ("name", "x"),
            ("payloadurl", "https://hooks.example.com/cs"),
        ],
    );
    assert_eq!(r.status, 431);
    assert_eq!(
        errortext(&r),
        "Invalid payload URL https://hooks.example.com/cs: the simulated zone delivers to loopback addresses only (127.0.0.0/8, localhost, [::1])"
    );
    let r = webhook(
        &mut z,
        &[
            ("name", "x"),
            ("payloadurl", "127.0.0.1:9/hook"),
            ("sslverification", "true"),
        ],
    );
    assert_eq!(
        errortext(&r),
        "SSL verification can be specified only for HTTPS URLs, http://127.0.0.1:9/hook"
    );
    let r = webhook(
        &mut z,
        &[
            ("name", "x"),
            ("payloadurl", "http://127.0.0.1:9/h"),
            ("scope", "Everything"),
        ],
    );
    assert_eq!(errortext(&r), "Invalid scope specified");
    let domain = z.world().domain_id.clone();
    let r = webhook(
        &mut z,
        &[
            ("name", "x"),
            ("payloadurl", "http://127.0.0.1:9/h"),
            ("scope", "Global"),
            ("account", "ops"),
            ("domainid", &domain),
        ],
    );
    assert_eq!(
        errortext(&r),
        "Scope Global can not be specified for owner ops"
    );

    let r = webhook(
        &mut z,
        &[
            ("name", "remedy"),
            ("payloadurl", "127.0.0.1:9/hook"),
            ("scope", "Global"),
            ("secretkey", "s3cret"),
        ],
    );
    assert_eq!(r.status, 200, "{}", r.body);
    let w = inner(&r)["webhook"].clone();
    assert_eq!(w["payloadurl"], "http://127.0.0.1:9/hook", "http:// added");
    assert_eq!(w["state"], "Enabled");
    assert_eq!(w["scope"], "Global");
    assert_eq!(w["account"], "admin");
    assert_eq!(w["sslverification"], false);
    assert_eq!(w["secretkey"], "s3cret", "shown as the server shows it");
    let r = webhook(
        &mut z,
        &[("name", "again"), ("payloadurl", "http://127.0.0.1:9/hook")],
    );
    assert_eq!(
        errortext(&r),
        "Payload URL: http://127.0.0.1:9/hook is already in use by another webhook"
    );

    let id = w["id"].as_str().unwrap().to_string();
    let r = call(&mut z, "listWebhooks", &[], t0());
    assert_eq!(inner(&r)["count"], 1);
    let r = call(
        &mut z,
        "updateWebhook",
        &[("id", &id), ("state", "Disabled"), ("secretkey", "")],
        t0(),
    );
    assert_eq!(inner(&r)["webhook"]["state"], "Disabled");
    assert_eq!(
        inner(&r)["webhook"].get("secretkey"),
        None,
        "a blank secret removes it"
    );
    let r = call(&mut z, "listWebhooks", &[("state", "Enabled")], t0());
    assert_eq!(r.body, serde_json::json!({"listwebhooksresponse": {}}));
    let got = events(&mut z, &[("keyword", "WEBHOOK")], t0());
    assert_eq!(
        got,
        vec![
            ev("WEBHOOK.UPDATE", "INFO", "Updating Webhook remedy"),
            ev("WEBHOOK.CREATE", "INFO", "Creating Webhook remedy"),
        ]
    );
    let r = call(&mut z, "deleteWebhook", &[("id", &id)], t0());
    assert_eq!(
        r.body,
        serde_json::json!({"deletewebhookresponse": {"success": true}})
    );
    let r = call(&mut z, "deleteWebhook", &[("id", &id)], t0());
    assert_eq!(r.status, 431, "gone: its id is no longer valid");
}

#[test]
fn events_are_queued_by_scope_and_the_delivery_faults_apply() {
    let mut z = zone("healthy");
    z.observe(t0());
    let domain = z.world().domain_id.clone();
    let local = webhook(
        &mut z,
        &[("name", "mine"), ("payloadurl", "http://127.0.0.1:9/a")],
    );
    let global = webhook(
        &mut z,
        &[
            ("name", "all"),
            ("payloadurl", "http://localhost:9/b"),
            ("scope", "Global"),
            ("secretkey", "k"),
        ],
    );
    let ops = webhook(
        &mut z,
        &[
            ("name", "ops"),
            ("payloadurl", "http://[::1]:9/c"),
            ("account", "ops"),
            ("domainid", &domain),
        ],
    );
    for r in [&local, &global, &ops] {
        assert_eq!(r.status, 200, "{}", r.body);
    }
    let id = |r: &Reply| inner(r)["webhook"]["id"].as_str().unwrap().to_string();
    // each WEBHOOK.CREATE event went to the webhooks that covered it when it was recorded,
    // the new one included
    let first: Vec<String> = z
        .take_outgoing()
        .into_iter()
        .map(|o| o.webhook_id)
        .collect();
    assert_eq!(
        first,
        vec![id(&local), id(&local), id(&global), id(&global), id(&ops)]
    );
    z.inject("dnsmasq-dead", "r-930-VM", at(1)).unwrap();
    let out = z.take_outgoing();
    let to: Vec<String> = out.iter().map(|o| o.webhook_id.clone()).collect();
    assert_eq!(
        to,
        vec![id(&global), id(&ops)],
        "a user account's router: Global and the owner's Local"
    );
    let o = &out[0];
    assert_eq!(o.event_type, "ROUTER.HEALTH.CHECKS");
    assert_eq!(o.url, "http://localhost:9/b");
    assert_eq!(o.secret.as_deref(), Some("k"));
    assert_eq!(o.account_uuid, model::id_for("account", "ops"));
    assert_eq!(
        (o.tries, o.timeout),
        (3, std::time::Duration::from_secs(10))
    );
    let payload: Value = serde_json::from_str(&o.payload).unwrap();
    assert_eq!(payload["event"], "ROUTER.HEALTH.CHECKS");
    assert_eq!(payload["status"], "Completed");
    assert_eq!(payload["entity"], "DomainRouter");
    assert_eq!(payload["entityuuid"], payload["DomainRouter"]);
    assert_eq!(payload["eventDateTime"], "2030-01-01 00:00:00 +0000");
    assert!(payload["description"]
        .as_str()
        .unwrap()
        .starts_with("Health checks failed on router r-930-VM"));
    assert_eq!(z.take_outgoing().len(), 0, "taken once");

    z.faults_mut().webhook_drop_next = 1;
    z.faults_mut().webhook_bad_signature_next = 1;
    z.faults_mut().webhook_duplicate_next = 1;
    z.faults_mut().webhook_delay_ms = 250;
    z.faults_mut().webhook_timeout_ms = Some(300);
    z.inject("agent-down", "kvm01", at(2)).unwrap();
    let out = z.take_outgoing();
    assert_eq!(
        out.len(),
        1,
        "admin's host event: the Local and Global webhooks, one dropped"
    );
    assert_eq!(out[0].webhook_id, id(&global));
    assert!(out[0].bad_signature && out[0].duplicate);
    assert_eq!(out[0].delay_ms, 250);
    assert_eq!(out[0].timeout, std::time::Duration::from_millis(300));
    let f = z.faults();
    assert_eq!(
        (
            f.webhook_drop_next,
            f.webhook_bad_signature_next,
            f.webhook_duplicate_next
        ),
        (0, 0, 0)
    );
}

#[test]
fn reads_leave_the_zone_unseen_and_a_change_over_ssh_is_looked_at() {
    let mut z = zone("healthy");
    z.observe(t0());
    assert!(!z.unseen, "a look clears the mark");
    for command in ["listHosts", "listRouters", "listSystemVms", "listEvents"] {
        let r = call(&mut z, command, &[("listall", "true")], at(1));
        assert_eq!(r.status, 200, "{command}: {}", r.body);
        assert!(!z.unseen, "{command} is a read");
    }
    let out = crate::ssh::commands::exec(&mut z, "r-930-VM", &["hostname".to_string()]);
    assert_eq!(out.stdout, "r-930-VM\n");
    assert!(!z.unseen, "hostname is a read");
    // a command that changes the machine marks the zone, and the next look reports it
    let stop = ["systemctl", "stop", "dnsmasq"].map(String::from);
    let out = crate::ssh::commands::exec(&mut z, "r-930-VM", &stop);
    assert_eq!(out.status, 0, "{out:?}");
    assert!(z.unseen, "systemctl stop is a change");
    z.observe(at(2));
    assert!(!z.unseen);
    assert_eq!(
        events(&mut z, &[("type", "ROUTER.HEALTH.CHECKS")], at(3)),
        vec![ev(
            "ROUTER.HEALTH.CHECKS",
            "ERROR",
            "Health checks failed on router r-930-VM: dns_check, dhcp_check (dnsmasq is not running)"
        )]
    );
    // a job that ends while the zone advances marks it too
    let id = router_id(&z, "r-930-VM");
    let r = call(&mut z, "rebootRouter", &[("id", &id)], at(4));
    assert_eq!(r.status, 200, "{}", r.body);
    z.observe(at(5));
    z.advance(at(60_000));
    assert!(z.unseen, "the reboot's end is a change");
}

fn router_id(z: &Zone, name: &str) -> String {
    z.world()
        .vms
        .iter()
        .find(|v| v.name == name && v.live())
        .map(|v| v.id.clone())
        .unwrap()
}
