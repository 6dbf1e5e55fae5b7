//! What the zone offers besides its machines, as real clients ask for it before they act:
//! `listApis` (from the zone's own API table, so cloudmonkey's `sync` learns exactly what the
//! zone serves), `listCapabilities`, `listDomains`, `listAccounts`, `listVPCOfferings`, the
//! system offerings, `listTags`, `updateHost` (a hypervisor's allocation state and tags) and
//! `changeServiceForRouter` (a stopped router's system offering). The list views go through
//! `lists.rs`'s filters and paging; the network service providers are `providers.rs`'s.
//!
//! The tenancy is the one the rest of the zone assumes: domain ROOT with the root admin
//! account `admin` (the caller) and the user account `ops` that owns the VPCs, networks,
//! routers and guest VMs. The zone has no resource tags, so `listTags` is always empty.

use serde_json::{json, Value};

use super::model::{id_for, World, ACCOUNTS, ADMIN_ACCOUNT, DOMAIN, VERSION};
use super::{Params, Zone};
use crate::apis::{self, ApiSpec};

/// When the seeded objects were created, as list replies show it.
const CREATED: &str = "2029-12-01T09:00:00+0000";

/// The VPC offerings: (name, is the default, redundant routers).
pub(super) const VPC_OFFERINGS: [(&str, bool, bool); 2] = [
    ("Default VPC offering", true, false),
    ("Redundant VPC offering", false, true),
];

/// The services a VPC offering's routers provide, each with its provider.
const VPC_SERVICES: [(&str, &str); 9] = [
    ("Dhcp", "VpcVirtualRouter"),
    ("Dns", "VpcVirtualRouter"),
    ("Lb", "VpcVirtualRouter"),
    ("NetworkACL", "VpcVirtualRouter"),
    ("PortForwarding", "VpcVirtualRouter"),
    ("SourceNat", "VpcVirtualRouter"),
    ("StaticNat", "VpcVirtualRouter"),
    ("UserData", "VpcVirtualRouter"),
    ("Vpn", "VpcVirtualRouter"),
];

/// The system offerings: (name, system VM type, CPUs, MHz, MiB).
const SYSTEM_OFFERINGS: [(&str, &str, u32, u32, u32); 3] = [
    (
        "System Offering For Software Router",
        "domainrouter",
        1,
        500,
        256,
    ),
    (
        "System Offering For Secondary Storage VM",
        "secondarystoragevm",
        1,
        500,
        512,
    ),
    (
        "System Offering For Console Proxy",
        "consoleproxy",
        1,
        500,
        1024,
    ),
];

/// `listServiceOfferings issystem=true`: the system VMs' offerings, by `systemvmtype` when
/// given.
pub(super) fn system_offerings(p: &Params) -> Vec<Value> {
    SYSTEM_OFFERINGS
        .iter()
        .filter(|(_, t, ..)| {
            p.get("systemvmtype")
                .is_none_or(|want| want.eq_ignore_ascii_case(t))
        })
        .map(|(name, t, cpus, mhz, mib)| {
            json!({
                "id": id_for("serviceoffering", name), "name": name, "displaytext": name,
                "cpunumber": cpus, "cpuspeed": mhz, "memory": mib, "storagetype": "shared",
                "offerha": false, "limitcpuuse": false, "issystem": true, "systemvmtype": t,
                "defaultuse": true, "iscustomized": false, "provisioningtype": "thin",
                "created": CREATED, "state": "Active",
            })
        })
        .collect()
}

/// Whether `id` names a system offering.
pub(super) fn is_system_offering(id: &str) -> bool {
    system_offering_name(id).is_some()
}

/// The name of the system offering `id`.
pub(super) fn system_offering_name(id: &str) -> Option<&'static str> {
    SYSTEM_OFFERINGS
        .iter()
        .map(|(name, ..)| *name)
        .find(|name| id_for("serviceoffering", name) == id)
}

/// The system offering routers are deployed with (`systemvmtype` `domainrouter`).
pub(super) fn router_offering_id() -> String {
    id_for("serviceoffering", SYSTEM_OFFERINGS[0].0)
}

/// The id of a VPC offering by name.
pub(super) fn vpc_offering_id(name: &str) -> String {
    id_for("vpcoffering", name)
}

/// `listCapabilities`: one object, not a list.
pub(super) fn capabilities() -> Value {
    json!({
        "securitygroupsenabled": false, "dynamicrolesenabled": true,
        "cloudstackversion": VERSION, "userpublictemplateenabled": true,
        "supportELB": "false", "projectinviterequired": false, "allowusercreateprojects": true,
        "customdiskofferingminsize": 1, "customdiskofferingmaxsize": 1024,
        "regionsecondaryenabled": false, "kvmsnapshotenabled": false,
        "allowuserviewdestroyedvm": false, "allowuserexpungerecovervm": false,
        "allowuserexpungerecovervolume": true, "allowuserviewalldomainaccounts": false,
        "kubernetesserviceenabled": false, "kubernetesclusterexperimentalfeaturesenabled": false,
        "customhypervisordisplayname": "Custom", "defaultuipagesize": 20,
    })
}

/// `listDomains`: the ROOT domain.
pub(super) fn domains(w: &World) -> Vec<Value> {
    vec![json!({
        "id": w.domain_id, "name": DOMAIN, "level": 0, "path": DOMAIN, "haschild": false,
        "state": "Active", "created": CREATED,
        "vmlimit": "Unlimited", "networklimit": "Unlimited", "vpclimit": "Unlimited",
    })]
}

/// `listAccounts`: the root admin and the user account, each with its one user.
pub(super) fn accounts(w: &World, p: &Params) -> Vec<Value> {
    ACCOUNTS
        .iter()
        .map(|name| account_json(w, name))
        .filter(|a| {
            p.get("accounttype")
                .is_none_or(|t| a["accounttype"] == t.parse::<u8>().unwrap_or(u8::MAX))
        })
        .collect()
}

fn account_json(w: &World, name: &str) -> Value {
    let admin = name == ADMIN_ACCOUNT;
    let (accounttype, roletype, rolename) = if admin {
        (1, "Admin", "Root Admin")
    } else {
        (0, "User", "User")
    };
    let roleid = id_for("role", rolename);
    let user = json!({
        "id": id_for("user", name), "username": name, "firstname": name, "lastname": "user",
        "created": CREATED, "state": "enabled", "account": name,
        "accountid": id_for("account", name), "accounttype": accounttype,
        "roleid": roleid, "roletype": roletype, "rolename": rolename,
        "domainid": w.domain_id, "domain": DOMAIN, "isdefault": admin,
    });
    json!({
        "id": id_for("account", name), "name": name, "accounttype": accounttype,
        "roleid": roleid, "roletype": roletype, "rolename": rolename,
        "domainid": w.domain_id, "domain": DOMAIN, "domainpath": DOMAIN,
        "state": "enabled", "isdefault": admin, "created": CREATED, "user": [user],
    })
}

/// `listVPCOfferings`, filtered by `isdefault` when given (`lists.rs` does the rest).
pub(super) fn vpc_offerings(p: &Params) -> Vec<Value> {
    VPC_OFFERINGS
        .iter()
        .filter(|(_, default, _)| {
            p.get("isdefault")
                .is_none_or(|_| p.flag_is("isdefault", *default))
        })
        .map(|(name, default, redundant)| {
            let service: Vec<Value> = VPC_SERVICES
                .iter()
                .map(|(s, provider)| json!({"name": s, "provider": [{"name": provider}]}))
                .collect();
            json!({
                "id": vpc_offering_id(name), "name": name, "displaytext": name,
                "isdefault": default, "state": "Enabled", "created": CREATED,
                "distributedvpcrouter": false, "supportsregionLevelvpc": false,
                "redundantrouter": redundant, "internetprotocol": "IPv4", "service": service,
            })
        })
        .collect()
}

/// `listApis`: every command of the zone's API table (or the one `name` asks for), with its
/// parameters and reply fields as the discovery plugin describes them.
pub(super) fn list_apis(key: &str, p: &Params) -> Result<Value, (u16, String)> {
    let specs: Vec<&ApiSpec> = match p.get("name") {
        Some(name) => vec![apis::get(name).filter(|s| s.name == name).ok_or((
            530,
            "Api Discovery plugin was unable to find an api by that name or process any apis"
                .to_string(),
        ))?],
        None => apis::all().collect(),
    };
    let items: Vec<Value> = specs.into_iter().map(api_json).collect();
    Ok(json!({ key: {"count": items.len(), "api": items} }))
}

fn api_json(spec: &ApiSpec) -> Value {
    let params: Vec<Value> = spec
        .params
        .iter()
        .map(|p| {
            let mut item = json!({
                "name": p.name, "description": p.description, "type": p.kind,
                "length": 255, "required": p.required,
            });
            if let Some(since) = &p.since {
                item["since"] = json!(since);
            }
            item
        })
        .collect();
    let response: Vec<Value> = spec
        .response_fields
        .iter()
        .flatten()
        .map(|f| {
            let mut item = json!({"name": f.name, "type": f.kind, "description": f.name});
            if !f.fields.is_empty() {
                item["response"] = f
                    .fields
                    .iter()
                    .map(|c| json!({"name": c, "type": "string", "description": c}))
                    .collect();
            }
            item
        })
        .collect();
    let mut item = json!({
        "name": spec.name, "description": spec.description, "isasync": spec.isasync,
        "params": params, "response": response,
    });
    if let Some(since) = &spec.since {
        item["since"] = json!(since);
    }
    if spec.list_item_key.is_some() {
        item["related"] = json!("");
    }
    item
}

impl Zone {
    /// updateHost: `allocationstate` Enable/Disable moves a hypervisor's resource state (only
    /// from Enabled or Disabled: a host in maintenance must leave it first), `hosttags` replaces
    /// its tags. Errors as ResourceManagerImpl raises them.
    pub(super) fn update_host(&mut self, key: &str, p: &Params) -> Result<Value, (u16, String)> {
        let id = p.get("id").unwrap_or_default();
        let w = &mut self.world;
        let Some(host) = w.hosts.iter_mut().find(|h| h.id == id) else {
            return Err((431, format!("Host with id {id} doesn't exist")));
        };
        if let Some(state) = p.get("allocationstate") {
            let next = match state {
                "Enable" => "Enabled",
                "Disable" => "Disabled",
                other => {
                    return Err((
                        530,
                        format!(
                            "Invalid allocation state:{other}, only Enable/Disable are allowed"
                        ),
                    ))
                }
            };
            if host.resourcestate != "Enabled" && host.resourcestate != "Disabled" {
                return Err((
                    530,
                    format!(
                        "No next resource state found for current state = {} event = {state}",
                        host.resourcestate
                    ),
                ));
            }
            host.resourcestate = next.to_string();
        }
        if let Some(tags) = p.get("hosttags") {
            host.hosttags = tags
                .split(',')
                .map(str::trim)
                .filter(|t| !t.is_empty())
                .map(str::to_string)
                .collect();
        }
        let item = self
            .hosts_json()
            .into_iter()
            .find(|h| h["id"] == id)
            .unwrap_or(Value::Null);
        Ok(json!({ key: {"host": item} }))
    }

    /// changeServiceForRouter, as 4.18's `upgradeRouter`: the offering it already has changes
    /// nothing (in any state); another must be a system offering (431) and the router Stopped
    /// (431), and becomes its offering. Offerings and routers are checked to exist before
    /// (`validate.rs`). The error texts name the offering by its id where the server prints
    /// its database id.
    pub(super) fn change_service_for_router(
        &mut self,
        key: &str,
        p: &Params,
    ) -> Result<Value, (u16, String)> {
        let (id, offering) = (
            p.get("id").unwrap_or_default(),
            p.get("serviceofferingid").unwrap_or_default(),
        );
        let vm = self.world.vm(id).expect("validated router");
        if vm.offeringid != offering {
            if !is_system_offering(offering) {
                return Err((
                    431,
                    format!("Cannot upgrade router vm to a non system service offering {offering}"),
                ));
            }
            if vm.state != "Stopped" {
                return Err((
                    431,
                    format!(
                        "Unable to upgrade router {} in state {}; make sure the router is stopped and not in an error state before upgrading.",
                        vm.log_name(),
                        vm.state
                    ),
                ));
            }
            self.world.vm_mut(id).expect("validated router").offeringid = offering.to_string();
        }
        let vm = self.world.vm(id).expect("validated router");
        Ok(json!({ key: {"router": self.router_json(vm)} }))
    }
}
