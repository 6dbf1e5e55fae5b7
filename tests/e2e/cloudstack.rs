//! The CloudStack client against the simulator over real HTTP on 127.0.0.1: signatures and
//! expiry checked by the server side, error envelopes, paging, async jobs, and which calls are
//! retried after injected faults.

use std::collections::BTreeMap;
use std::time::Duration;

use cloudstack_sim::faults::Faults;
use cloudstack_sim::scenario::Scenario;
use cloudstack_sim::server::{Sim, SimConfig};
use remedy::cloudstack::{Client, Credentials, CsError, Method, Options};
use serde_json::Value;
use tokio::time::Instant;

async fn sim(scenario: &str) -> Sim {
    Sim::start(SimConfig {
        scenario: Scenario::builtin(scenario).expect("shipped scenario"),
        listen: "127.0.0.1:0".parse().unwrap(),
        api_key: None,
        secret_key: None,
    })
    .await
    .expect("simulator starts")
}

fn fast() -> Options {
    Options {
        poll_initial: Duration::from_millis(50),
        poll_max: Duration::from_millis(200),
        retry_delay: Duration::from_millis(20),
        request_timeout: Duration::from_secs(5),
        ..Options::default()
    }
}

fn client(sim: &Sim, opts: Options) -> Client {
    Client::new(
        Credentials {
            endpoint: sim.endpoint(),
            api_key: sim.api_key().into(),
            secret_key: sim.secret_key().into(),
        },
        opts,
    )
    .unwrap()
}

fn args(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn soon() -> Instant {
    Instant::now() + Duration::from_secs(30)
}

/// How many requests the simulator saw for `command` (any outcome).
fn seen(sim: &Sim, command: &str) -> usize {
    sim.requests()
        .iter()
        .filter(|r| r.command.eq_ignore_ascii_case(command))
        .count()
}

#[tokio::test]
async fn vr_backup_loop_lists_both_routers_backup() {
    let sim = sim("vr-backup-loop").await;
    let c = client(&sim, fast());
    let reply = c
        .call("listRouters", &args(&[]), Method::Get, soon(), None)
        .await
        .unwrap();
    let routers = reply["router"].as_array().expect("routers listed");
    assert_eq!(routers.len(), 2, "{reply}");
    for r in routers {
        assert_eq!(r["redundantstate"], "BACKUP", "{r}");
    }
    // listall=true was added: the routers belong to a user account
    let last = sim
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.command == "listRouters")
        .unwrap();
    assert_eq!(last.status, Some(200), "{last:?}");
}

#[tokio::test]
async fn a_wrong_secret_gets_401_with_a_hint_and_no_secret() {
    let sim = sim("healthy").await;
    let c = Client::new(
        Credentials {
            endpoint: sim.endpoint(),
            api_key: sim.api_key().into(),
            secret_key: "not-the-secret-0123456789".into(),
        },
        fast(),
    )
    .unwrap();
    let e = c
        .call("listZones", &args(&[]), Method::Get, soon(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(401), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("secret key") && msg.contains("clock"), "{msg}");
    assert!(!msg.contains("not-the-secret") && !msg.contains(sim.secret_key()));
    assert_eq!(seen(&sim, "listZones"), 1, "a 401 is not retried");
}

#[tokio::test]
async fn an_expired_request_gets_401() {
    let sim = sim("healthy").await;
    let c = client(&sim, fast());
    let past = jiff::Timestamp::now() - jiff::SignedDuration::from_secs(60);
    let e = c
        .request_expiring("listZones", &args(&[]), Method::Get, Some(past))
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(401), "{e}");
    // the same call, unexpired, works
    c.request_expiring("listZones", &args(&[]), Method::Get, None)
        .await
        .expect("signature version 2 without expiry is accepted");
}

#[tokio::test]
async fn a_missing_param_gets_431() {
    let sim = sim("healthy").await;
    let c = client(&sim, fast());
    let e = c
        .call("listTrafficTypes", &args(&[]), Method::Get, soon(), None)
        .await
        .unwrap_err();
    assert_eq!(e.code(), Some(431), "{e}");
    assert!(e.to_string().contains("physicalnetworkid"), "{e}");
}

#[tokio::test]
async fn values_with_reserved_characters_are_signed_and_sent_right() {
    let sim = sim("healthy").await;
    let c = client(&sim, fast());
    // commas, slashes, a plus, a space, a tilde and non-ASCII all survive signing + transport
    let reply = c
        .call(
            "listConfigurations",
            &args(&[("keyword", "a+b c/d,e~f ü*")]),
            Method::Get,
            soon(),
            None,
        )
        .await
        .unwrap();
    assert!(reply.is_object());
}

#[tokio::test]
async fn lists_are_walked_across_pages() {
    let sim = sim("healthy").await;
    let one_page = client(&sim, fast())
        .call("listConfigurations", &args(&[]), Method::Get, soon(), None)
        .await
        .unwrap();
    let total = one_page["count"].as_u64().unwrap() as usize;
    assert!(
        total >= 5,
        "the healthy zone has several settings: {one_page}"
    );
    let page_size = (total as u32).div_ceil(3);
    let before = seen(&sim, "listConfigurations");
    let paged = client(
        &sim,
        Options {
            page_size,
            ..fast()
        },
    )
    .call("listConfigurations", &args(&[]), Method::Get, soon(), None)
    .await
    .unwrap();
    assert_eq!(seen(&sim, "listConfigurations") - before, 3, "three pages");
    assert_eq!(paged["count"].as_u64().unwrap() as usize, total);
    let names = |v: &Value| -> Vec<String> {
        v["configuration"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(names(&paged), names(&one_page));
}

#[tokio::test]
async fn an_async_job_is_followed_to_its_end() {
    let sim = sim("vr-backup-loop").await;
    sim.set_faults(Faults {
        job_ms: Some(300),
        ..Faults::default()
    });
    let c = client(&sim, fast());
    let routers = c
        .call("listRouters", &args(&[]), Method::Get, soon(), None)
        .await
        .unwrap();
    let id = routers["router"][0]["id"].as_str().unwrap().to_string();
    let started = std::time::Instant::now();
    let result = c
        .call(
            "rebootRouter",
            &args(&[("id", &id)]),
            Method::Post,
            soon(),
            None,
        )
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300));
    assert_eq!(result["router"]["id"], id.as_str(), "{result}");
    assert_eq!(seen(&sim, "rebootRouter"), 1);
    assert!(seen(&sim, "queryAsyncJobResult") >= 2, "polled until done");
}

#[tokio::test]
async fn a_failing_job_surfaces_its_errortext() {
    let sim = sim("vr-backup-loop").await;
    sim.set_faults(Faults {
        job_ms: Some(100),
        fail_jobs: vec!["rebootRouter".into()],
        job_error_text: Some("Unable to reboot router: the host is in maintenance".into()),
        ..Faults::default()
    });
    let c = client(&sim, fast());
    let routers = c
        .call("listRouters", &args(&[]), Method::Get, soon(), None)
        .await
        .unwrap();
    let id = routers["router"][0]["id"].as_str().unwrap().to_string();
    let e = c
        .call(
            "rebootRouter",
            &args(&[("id", &id)]),
            Method::Post,
            soon(),
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CsError::JobFailed { code: 530, .. }), "{e:?}");
    assert!(e.to_string().contains("host is in maintenance"), "{e}");
}

#[tokio::test]
async fn a_slow_job_stops_at_the_deadline_naming_the_job() {
    let sim = sim("vr-backup-loop").await;
    sim.set_faults(Faults {
        slow_jobs: vec!["*".into()],
        slow_job_ms: 60_000,
        ..Faults::default()
    });
    let c = client(&sim, fast());
    let routers = c
        .call("listRouters", &args(&[]), Method::Get, soon(), None)
        .await
        .unwrap();
    let id = routers["router"][0]["id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_millis(600);
    let e = c
        .call(
            "rebootRouter",
            &args(&[("id", &id)]),
            Method::Post,
            deadline,
            None,
        )
        .await
        .unwrap_err();
    assert!(matches!(e, CsError::JobDeadline { .. }), "{e:?}");
    assert!(e.to_string().contains("queryAsyncJobResult jobid="), "{e}");
}

#[tokio::test]
async fn an_injected_5xx_on_a_read_is_retried_and_succeeds() {
    let sim = sim("healthy").await;
    sim.set_faults(Faults {
        http_5xx_next: 2,
        ..Faults::default()
    });
    let c = client(&sim, fast());
    c.call("listZones", &args(&[]), Method::Get, soon(), None)
        .await
        .expect("third attempt succeeds");
    assert_eq!(seen(&sim, "listZones"), 3);
}

/// A mutating call: `updateConfiguration network.gc.interval=VALUE`.
async fn set_gc_interval(c: &Client, value: &str) -> Result<Value, CsError> {
    c.call(
        "updateConfiguration",
        &args(&[("name", "network.gc.interval"), ("value", value)]),
        Method::Post,
        soon(),
        None,
    )
    .await
}

#[tokio::test]
async fn an_injected_5xx_on_a_mutating_call_is_not_retried() {
    let sim = sim("healthy").await;
    sim.set_faults(Faults {
        http_5xx_next: 1,
        ..Faults::default()
    });
    let c = client(&sim, fast());
    let e = set_gc_interval(&c, "700").await.unwrap_err();
    assert_eq!(e.code(), Some(503), "{e}");
    assert_eq!(seen(&sim, "updateConfiguration"), 1, "sent exactly once");
}

#[tokio::test]
async fn a_dropped_connection_on_a_change_is_reported_as_uncertain_and_not_retried() {
    let sim = sim("healthy").await;
    sim.set_faults(Faults {
        drop_after_apply_next: 1,
        ..Faults::default()
    });
    let c = client(&sim, fast());
    let e = set_gc_interval(&c, "700").await.unwrap_err();
    assert!(matches!(e, CsError::Transport { sent: true, .. }), "{e:?}");
    assert!(e.to_string().contains("may or may not"), "{e}");
    assert_eq!(seen(&sim, "updateConfiguration"), 1);
    // ... and the change did happen on the server, which is why it must not be retried blindly
    let now = c
        .call(
            "listConfigurations",
            &args(&[("name", "network.gc.interval")]),
            Method::Get,
            soon(),
            None,
        )
        .await
        .unwrap();
    let item = now["configuration"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "network.gc.interval")
        .cloned()
        .unwrap();
    assert_eq!(item["value"], "700");
}

#[tokio::test]
async fn a_dropped_connection_on_a_read_is_retried() {
    let sim = sim("healthy").await;
    sim.set_faults(Faults {
        drop_next: 1,
        ..Faults::default()
    });
    let c = client(&sim, fast());
    c.call("listZones", &args(&[]), Method::Get, soon(), None)
        .await
        .expect("retried after the drop");
    assert_eq!(seen(&sim, "listZones"), 2);
}

#[tokio::test]
async fn a_slow_server_is_given_up_on_at_the_steps_deadline() {
    let sim = sim("healthy").await;
    sim.set_faults(Faults {
        latency_ms: 3000,
        ..Faults::default()
    });
    // the HTTP timeout (5 s) is longer than the step has left: the deadline wins
    let c = client(&sim, fast());
    let start = Instant::now();
    let deadline = start + Duration::from_millis(400);
    let e = c
        .call("listZones", &args(&[]), Method::Get, deadline, None)
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("listZones") && msg.contains("deadline"),
        "{msg}"
    );
    assert!(msg.contains("nothing was changed"), "{msg}");
    let start = Instant::now();
    let e = c
        .call(
            "updateConfiguration",
            &args(&[("name", "network.gc.interval"), ("value", "700")]),
            Method::Post,
            start + Duration::from_millis(400),
            None,
        )
        .await
        .unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(2), "{e}");
    let msg = e.to_string();
    assert!(
        msg.contains("updateConfiguration") && msg.contains("may or may not have acted"),
        "{msg}"
    );
    // nothing is sent once the deadline has passed
    let before = seen(&sim, "updateConfiguration");
    let e = set_gc_interval_by(&c, Instant::now()).await.unwrap_err();
    assert!(e.to_string().contains("not sent"), "{e}");
    assert_eq!(seen(&sim, "updateConfiguration"), before);
}

async fn set_gc_interval_by(c: &Client, deadline: Instant) -> Result<Value, CsError> {
    c.call(
        "updateConfiguration",
        &args(&[("name", "network.gc.interval"), ("value", "701")]),
        Method::Post,
        deadline,
        None,
    )
    .await
}
