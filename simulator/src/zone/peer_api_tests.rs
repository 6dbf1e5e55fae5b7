//! The APIs the ngine_io.cloudstack modules call beyond the catalog (issue 22's peer clients):
//! a router's system offering and changeServiceForRouter, listVolumes, and the network service
//! providers with their elements.

use serde_json::{json, Value};

use super::tests::{at, call, inner, t0, zone};
use super::*;

fn errortext(r: &Reply) -> String {
    inner(r)["errortext"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

fn vm_id(z: &Zone, name: &str) -> String {
    let vm = z.world().vms.iter().find(|v| v.name == name).unwrap();
    vm.id.clone()
}

/// Runs an async command and returns its job record once it has ended.
fn run_job(z: &mut Zone, command: &str, args: &[(&str, &str)]) -> Value {
    let r = call(z, command, args, t0());
    assert_eq!(r.status, 200, "{:?}", r.body);
    let id = inner(&r)["jobid"].as_str().expect("a jobid").to_string();
    let q = call(z, "queryAsyncJobResult", &[("jobid", &id)], at(60_000));
    assert_eq!(q.status, 200, "{:?}", q.body);
    inner(&q).clone()
}

fn offering_id(z: &mut Zone, systemvmtype: &str) -> String {
    let r = call(
        z,
        "listServiceOfferings",
        &[("issystem", "true"), ("systemvmtype", systemvmtype)],
        t0(),
    );
    inner(&r)["serviceoffering"][0]["id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn router(z: &mut Zone, id: &str) -> Value {
    let r = call(z, "listRouters", &[("id", id)], t0());
    inner(&r)["router"][0].clone()
}

#[test]
fn routers_carry_the_domainrouter_system_offering() {
    let mut z = zone("healthy");
    let offering = offering_id(&mut z, "domainrouter");
    let r = call(&mut z, "listRouters", &[("listall", "true")], t0());
    let routers = inner(&r)["router"].as_array().unwrap().clone();
    assert!(!routers.is_empty());
    for r in routers {
        assert_eq!(r["serviceofferingid"], offering.as_str(), "{r}");
        assert_eq!(
            r["serviceofferingname"],
            "System Offering For Software Router"
        );
    }
}

#[test]
fn change_service_for_router_needs_a_stopped_router_and_a_system_offering() {
    let mut z = zone("healthy");
    let id = vm_id(&z, "r-931-VM");
    let own = offering_id(&mut z, "domainrouter");
    let other = offering_id(&mut z, "consoleproxy");
    let guest = z.world().offerings[0].id.clone();

    // its own offering: nothing to change, whatever its state
    let r = call(
        &mut z,
        "changeServiceForRouter",
        &[("id", &id), ("serviceofferingid", &own)],
        t0(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["changeserviceforrouterresponse"]["router"]["serviceofferingid"],
        own.as_str()
    );

    // running: refused as the server refuses it
    let r = call(
        &mut z,
        "changeServiceForRouter",
        &[("id", &id), ("serviceofferingid", &other)],
        t0(),
    );
    assert_eq!(r.status, 431);
    assert_eq!(
        errortext(&r),
        "Unable to upgrade router VM[DomainRouter|r-931-VM] in state Running; make sure the \
         router is stopped and not in an error state before upgrading."
    );
    // a guest offering: refused before the state is looked at
    let r = call(
        &mut z,
        "changeServiceForRouter",
        &[("id", &id), ("serviceofferingid", &guest)],
        t0(),
    );
    assert_eq!(r.status, 431);
    assert_eq!(
        errortext(&r),
        format!("Cannot upgrade router vm to a non system service offering {guest}")
    );
    assert_eq!(router(&mut z, &id)["serviceofferingid"], own.as_str());

    // stopped: the offering changes, and listRouters shows it
    let job = run_job(&mut z, "stopRouter", &[("id", &id)]);
    assert_eq!(job["jobstatus"], 1, "{job}");
    let r = call(
        &mut z,
        "changeServiceForRouter",
        &[("id", &id), ("serviceofferingid", &other)],
        at(60_000),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let shown = router(&mut z, &id);
    assert_eq!(shown["serviceofferingid"], other.as_str());
    assert_eq!(
        shown["serviceofferingname"],
        "System Offering For Console Proxy"
    );
}

#[test]
fn list_volumes_shows_root_volumes_in_the_callers_scope() {
    let mut z = zone("healthy");
    let web = vm_id(&z, "web-vm1");
    // a root admin without listall sees only its own account's (none)
    let r = call(&mut z, "listVolumes", &[], t0());
    assert_eq!(r.body, json!({"listvolumesresponse": {}}));

    let domain = z.world().domain_id.clone();
    let r = call(
        &mut z,
        "listVolumes",
        &[
            ("account", "ops"),
            ("domainid", &domain),
            ("virtualmachineid", &web),
        ],
        t0(),
    );
    let body = inner(&r);
    assert_eq!(body["count"], 1, "{body}");
    let v = &body["volume"][0];
    let number = z.world().vms.iter().find(|v| v.id == web).unwrap().number;
    assert_eq!(v["name"], format!("ROOT-{number}"));
    assert_eq!(v["type"], "ROOT");
    assert_eq!(v["size"], 8u64 << 30);
    assert_eq!(v["state"], "Ready");
    assert_eq!(v["virtualmachineid"], web.as_str());
    assert_eq!(v["vmname"], "web-vm1");
    assert_eq!(v["vmtype"], "User");
    assert_eq!(v["account"], "ops");
    assert_eq!(v["deviceid"], 0);

    // every guest VM's with listall; system VMs' only with listsystemvms
    let guests = z.world().vms.iter().filter(|v| v.is_guest()).count();
    let r = call(&mut z, "listVolumes", &[("listall", "true")], t0());
    assert_eq!(inner(&r)["count"], guests);
    let live = z.world().vms.iter().filter(|v| v.live()).count();
    let r = call(
        &mut z,
        "listVolumes",
        &[("listall", "true"), ("listsystemvms", "true")],
        t0(),
    );
    assert_eq!(inner(&r)["count"], live);
    let names: Vec<&str> = inner(&r)["volume"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|v| v["vmtype"] == "DomainRouter")
        .map(|v| v["serviceofferingname"].as_str().unwrap())
        .collect();
    assert!(names
        .iter()
        .all(|n| *n == "System Offering For Software Router"));

    // by id; an unknown id is refused as the server refuses an unknown uuid
    let id = v["id"].as_str().unwrap().to_string();
    let r = call(&mut z, "listVolumes", &[("id", &id)], t0());
    assert_eq!(inner(&r)["count"], 1);
    let r = call(
        &mut z,
        "listVolumes",
        &[("id", "00000000-0000-4000-a000-000000000000")],
        t0(),
    );
    assert_eq!(r.status, 431);
}

/// The provider of that name: (id, state).
fn provider(z: &mut Zone, name: &str) -> (String, String) {
    let r = call(z, "listNetworkServiceProviders", &[("name", name)], t0());
    let p = &inner(&r)["networkserviceprovider"][0];
    (
        p["id"].as_str().unwrap().to_string(),
        p["state"].as_str().unwrap().to_string(),
    )
}

#[test]
fn providers_are_disabled_and_enabled_in_a_job() {
    let mut z = zone("healthy");
    let (id, state) = provider(&mut z, "VirtualRouter");
    assert_eq!(state, "Enabled");

    let job = run_job(
        &mut z,
        "updateNetworkServiceProvider",
        &[("id", &id), ("state", "Disabled")],
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
    assert_eq!(
        job["cmd"],
        "org.apache.cloudstack.api.command.admin.network.UpdateNetworkServiceProviderCmd"
    );
    assert!(job.get("jobinstanceid").is_none(), "{job}");
    assert_eq!(
        job["jobresult"]["networkserviceprovider"]["state"],
        "Disabled"
    );
    assert_eq!(provider(&mut z, "VirtualRouter").1, "Disabled");

    // a state the server does not know fails the job, changing nothing
    let job = run_job(
        &mut z,
        "updateNetworkServiceProvider",
        &[("id", &id), ("state", "enabled")],
    );
    assert_eq!(job["jobstatus"], 2, "{job}");
    assert_eq!(job["jobresultcode"], 431);
    assert_eq!(
        job["jobresult"]["errortext"],
        "Unable to resolve state 'enabled' to a supported value {Enabled or Disabled}"
    );
    let job = run_job(
        &mut z,
        "updateNetworkServiceProvider",
        &[("id", &id), ("servicelist", "Dhcp,Teleport")],
    );
    assert_eq!(
        job["jobresult"]["errortext"],
        "Invalid Network Service specified=Teleport"
    );

    let job = run_job(
        &mut z,
        "updateNetworkServiceProvider",
        &[("id", &id), ("state", "Enabled")],
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
    assert_eq!(provider(&mut z, "VirtualRouter").1, "Enabled");
}

#[test]
fn a_provider_whose_element_is_disabled_cannot_be_enabled() {
    let mut z = zone("healthy");
    let (nsp, _) = provider(&mut z, "InternalLbVm");
    let r = call(&mut z, "listInternalLoadBalancerElements", &[], t0());
    let elements = inner(&r)["internalloadbalancerelement"].clone();
    assert_eq!(elements.as_array().unwrap().len(), 1, "{elements}");
    assert_eq!(elements[0]["nspid"], nsp.as_str());
    assert_eq!(elements[0]["enabled"], true);
    let element = elements[0]["id"].as_str().unwrap().to_string();

    let job = run_job(
        &mut z,
        "updateNetworkServiceProvider",
        &[("id", &nsp), ("state", "Disabled")],
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
    let job = run_job(
        &mut z,
        "configureInternalLoadBalancerElement",
        &[("id", &element), ("enabled", "false")],
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
    assert_eq!(
        job["jobresult"]["internalloadbalancerelement"]["enabled"],
        false
    );
    let job = run_job(
        &mut z,
        "updateNetworkServiceProvider",
        &[("id", &nsp), ("state", "Enabled")],
    );
    assert_eq!(job["jobstatus"], 2, "{job}");
    assert_eq!(job["jobresultcode"], 530);
    assert_eq!(
        job["jobresult"]["errortext"],
        "Provider is not ready, cannot Enable the provider, please configure the provider first"
    );
    assert_eq!(provider(&mut z, "InternalLbVm").1, "Disabled");

    // the element first, then the provider (what cs_physical_network nsps_enabled does)
    let job = run_job(
        &mut z,
        "configureInternalLoadBalancerElement",
        &[("id", &element), ("enabled", "true")],
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
    let job = run_job(
        &mut z,
        "updateNetworkServiceProvider",
        &[("id", &nsp), ("state", "Enabled")],
    );
    assert_eq!(job["jobstatus"], 1, "{job}");
}

#[test]
fn virtual_router_elements_list_both_router_providers() {
    let mut z = zone("healthy");
    let (vr, _) = provider(&mut z, "VirtualRouter");
    let (vpc, _) = provider(&mut z, "VpcVirtualRouter");
    let r = call(&mut z, "listVirtualRouterElements", &[], t0());
    let items = inner(&r)["virtualrouterelement"]
        .as_array()
        .unwrap()
        .clone();
    let nspids: Vec<&str> = items.iter().map(|e| e["nspid"].as_str().unwrap()).collect();
    assert_eq!(nspids, [vr.as_str(), vpc.as_str()]);
    let id = items[1]["id"].as_str().unwrap().to_string();
    let job = run_job(
        &mut z,
        "configureVirtualRouterElement",
        &[("id", &id), ("enabled", "false")],
    );
    assert_eq!(
        job["cmd"],
        "org.apache.cloudstack.api.command.admin.router.ConfigureVirtualRouterElementCmd"
    );
    assert_eq!(job["jobresult"]["virtualrouterelement"]["enabled"], false);
    let r = call(
        &mut z,
        "listVirtualRouterElements",
        &[("nspid", &vpc), ("enabled", "false")],
        t0(),
    );
    assert_eq!(inner(&r)["count"], 1);
    // an internal LB element is not a virtual router element
    let r = call(&mut z, "listInternalLoadBalancerElements", &[], t0());
    let ilb = inner(&r)["internalloadbalancerelement"][0]["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = call(
        &mut z,
        "configureVirtualRouterElement",
        &[("id", &ilb), ("enabled", "true")],
        t0(),
    );
    assert_eq!(r.status, 431);
}
