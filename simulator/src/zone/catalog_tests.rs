//! The APIs real clients ask for before they act (issue 22): discovery, capabilities,
//! tenancy, offerings, providers, tags, updateHost, and updateConfiguration's scopes.

use serde_json::json;

use super::tests::{call, inner, t0, zone};
use super::*;

fn errortext(r: &Reply) -> String {
    inner(r)["errortext"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn list_apis_describes_the_zones_own_table() {
    let mut z = zone("healthy");
    let r = call(&mut z, "listApis", &[], t0());
    assert_eq!(r.status, 200);
    let body = &r.body["listapisresponse"];
    assert_eq!(body["count"], crate::apis::all().count());
    let api = body["api"].as_array().unwrap();
    let routers = api.iter().find(|a| a["name"] == "listRouters").unwrap();
    assert_eq!(routers["isasync"], false);
    let listall = routers["params"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "listall")
        .unwrap();
    assert_eq!(listall["type"], "boolean");
    assert_eq!(listall["required"], false);
    assert!(routers["response"]
        .as_array()
        .unwrap()
        .iter()
        .any(|f| f["name"] == "redundantstate"));
    let update = api
        .iter()
        .find(|a| a["name"] == "updatePhysicalNetwork")
        .unwrap();
    assert_eq!(update["isasync"], true);
    let r = call(&mut z, "listApis", &[("name", "updateHost")], t0());
    assert_eq!(r.body["listapisresponse"]["count"], 1);
    let r = call(
        &mut z,
        "listApis",
        &[("name", "deployVirtualMachine")],
        t0(),
    );
    assert_eq!(r.status, 530);
    assert_eq!(
        errortext(&r),
        "Api Discovery plugin was unable to find an api by that name or process any apis"
    );
}

#[test]
fn capabilities_domains_and_accounts() {
    let mut z = zone("healthy");
    let r = call(&mut z, "listCapabilities", &[], t0());
    let cap = &r.body["listcapabilitiesresponse"]["capability"];
    assert_eq!(cap["cloudstackversion"], model::VERSION);
    assert_eq!(cap["securitygroupsenabled"], false);

    let r = call(&mut z, "listDomains", &[("listall", "true")], t0());
    let d = &r.body["listdomainsresponse"];
    assert_eq!(d["count"], 1);
    assert_eq!(d["domain"][0]["path"], "ROOT");
    assert_eq!(d["domain"][0]["id"], z.world().domain_id.as_str());
    assert!(d["domain"][0].get("parentdomainid").is_none());

    let domain = z.world().domain_id.clone();
    let r = call(
        &mut z,
        "listAccounts",
        &[("name", "ops"), ("domainid", &domain), ("listall", "true")],
        t0(),
    );
    let a = &r.body["listaccountsresponse"];
    assert_eq!(a["count"], 1);
    assert_eq!(a["account"][0]["name"], "ops");
    assert_eq!(a["account"][0]["accounttype"], 0);
    assert_eq!(a["account"][0]["user"][0]["username"], "ops");
    let r = call(&mut z, "listAccounts", &[("accounttype", "1")], t0());
    assert_eq!(
        r.body["listaccountsresponse"]["account"][0]["name"],
        "admin"
    );
    let r = call(&mut z, "listAccounts", &[("name", "nobody")], t0());
    assert_eq!(r.body, json!({"listaccountsresponse": {}}));
}

#[test]
fn offerings_providers_and_tags() {
    let mut z = zone("healthy");
    let r = call(&mut z, "listVPCOfferings", &[("isdefault", "true")], t0());
    let o = &r.body["listvpcofferingsresponse"];
    assert_eq!(o["count"], 1);
    assert_eq!(o["vpcoffering"][0]["name"], "Default VPC offering");
    let r = call(
        &mut z,
        "listVPCOfferings",
        &[("name", "Redundant VPC offering")],
        t0(),
    );
    let id = r.body["listvpcofferingsresponse"]["vpcoffering"][0]["id"].clone();
    let r = call(&mut z, "listVPCs", &[("listall", "true")], t0());
    assert_eq!(r.body["listvpcsresponse"]["vpc"][0]["vpcofferingid"], id);

    let r = call(
        &mut z,
        "listServiceOfferings",
        &[("issystem", "true"), ("systemvmtype", "domainrouter")],
        t0(),
    );
    let so = &r.body["listserviceofferingsresponse"];
    assert_eq!(so["count"], 1);
    assert_eq!(
        so["serviceoffering"][0]["name"],
        "System Offering For Software Router"
    );
    let so_id = so["serviceoffering"][0]["id"].as_str().unwrap().to_string();
    let r = call(
        &mut z,
        "listServiceOfferings",
        &[("id", &so_id), ("issystem", "true")],
        t0(),
    );
    assert_eq!(r.body["listserviceofferingsresponse"]["count"], 1);

    let pn = z.world().physnets[0].id.clone();
    let r = call(
        &mut z,
        "listNetworkServiceProviders",
        &[("physicalnetworkid", &pn), ("name", "VpcVirtualRouter")],
        t0(),
    );
    let p = &r.body["listnetworkserviceprovidersresponse"];
    assert_eq!(p["count"], 1);
    assert_eq!(p["networkserviceprovider"][0]["state"], "Enabled");
    assert_eq!(
        p["networkserviceprovider"][0]["physicalnetworkid"],
        pn.as_str()
    );

    let r = call(&mut z, "listTags", &[("resourcetype", "UserVm")], t0());
    assert_eq!(r.body, json!({"listtagsresponse": {}}));
}

#[test]
fn update_host_moves_the_resource_state() {
    let mut z = zone("healthy");
    let id = z.world().hosts[0].id.clone();
    let r = call(
        &mut z,
        "updateHost",
        &[("id", &id), ("allocationstate", "Disable")],
        t0(),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    assert_eq!(
        r.body["updatehostresponse"]["host"]["resourcestate"],
        "Disabled"
    );
    assert_eq!(z.world().hosts[0].resourcestate, "Disabled");
    let r = call(
        &mut z,
        "updateHost",
        &[("id", &id), ("allocationstate", "Enable")],
        t0(),
    );
    assert_eq!(
        r.body["updatehostresponse"]["host"]["resourcestate"],
        "Enabled"
    );
    let r = call(
        &mut z,
        "updateHost",
        &[("id", &id), ("allocationstate", "Maintenance")],
        t0(),
    );
    assert_eq!(r.status, 530);
    assert_eq!(
        errortext(&r),
        "Invalid allocation state:Maintenance, only Enable/Disable are allowed"
    );
    let r = call(
        &mut z,
        "updateHost",
        &[("id", &id), ("hosttags", "ssd, fast")],
        t0(),
    );
    assert_eq!(r.body["updatehostresponse"]["host"]["hosttags"], "ssd,fast");
    let r = call(&mut z, "updateHost", &[("allocationstate", "Enable")], t0());
    assert_eq!(r.status, 431, "id is required");
}

#[test]
fn update_configuration_refuses_a_scope_the_setting_lacks() {
    let mut z = zone("healthy");
    let zone_id = z.world().zone_id.clone();
    let cluster = z.world().clusters[0].id.clone();
    let account = model::id_for("account", "ops");
    let set = |z: &mut Zone, name: &str, scope: (&str, &str)| {
        call(
            z,
            "updateConfiguration",
            &[("name", name), ("value", "true"), scope],
            t0(),
        )
    };
    // zone-only setting given a cluster or an account
    for scope in [
        ("clusterid", cluster.as_str()),
        ("accountid", account.as_str()),
    ] {
        let r = set(&mut z, "system.vm.use.local.storage", scope);
        assert_eq!(r.status, 431, "{scope:?}");
        assert_eq!(inner(&r)["cserrorcode"], 4350);
        assert_eq!(
            errortext(&r),
            "Invalid scope id provided for the parameter system.vm.use.local.storage"
        );
    }
    // a global-only setting at a zone
    let r = set(
        &mut z,
        "api.throttling.enabled",
        ("zoneid", zone_id.as_str()),
    );
    assert_eq!(r.status, 431);
    // two scopes at once
    let r = call(
        &mut z,
        "updateConfiguration",
        &[
            ("name", "vpc.max.networks"),
            ("value", "4"),
            ("zoneid", &zone_id),
            ("accountid", &account),
        ],
        t0(),
    );
    assert_eq!(
        errortext(&r),
        "cannot handle multiple IDs, provide only one ID corresponding to the scope"
    );
    // the zone's own value, the global one untouched
    let r = set(
        &mut z,
        "system.vm.use.local.storage",
        ("zoneid", zone_id.as_str()),
    );
    assert_eq!(r.status, 200, "{:?}", r.body);
    let item = &r.body["updateconfigurationresponse"]["configuration"];
    assert_eq!(
        (item["value"].as_str(), item["scope"].as_str()),
        (Some("true"), Some("zone"))
    );
    let r = call(
        &mut z,
        "listConfigurations",
        &[
            ("name", "system.vm.use.local.storage"),
            ("zoneid", &zone_id),
        ],
        t0(),
    );
    assert_eq!(
        r.body["listconfigurationsresponse"]["configuration"][0]["value"],
        "true"
    );
    assert_eq!(z.world().setting("system.vm.use.local.storage"), "false");
}

#[test]
fn fields_without_a_value_are_left_out() {
    let mut z = zone("vr-backup-loop");
    let r = call(&mut z, "listPhysicalNetworks", &[], t0());
    let pn = &r.body["listphysicalnetworksresponse"]["physicalnetwork"][0];
    assert!(pn.get("vlan").is_none(), "{pn}");
    assert!(pn.get("tags").is_none(), "{pn}");
    // settings keep an empty value
    let mut z = zone("healthy");
    let r = call(
        &mut z,
        "listConfigurations",
        &[("name", "api.throttling.enabled")],
        t0(),
    );
    assert!(r.body.to_string().contains("\"value\""));
}
