//! Generic parameter checks every command goes through before it runs, as the management
//! server's dispatcher does: required parameters, value types (uuids must name an existing
//! entity of the right kind), and the paging rules of list commands.
//!
//! Error codes: a missing parameter and `page`/`pagesize` given alone are plain
//! `ServerApiException`s (431, cserrorcode 9999); bad values are
//! `InvalidParameterValueException`s (431, cserrorcode 4350).

use std::collections::BTreeMap;

use super::lists::nics;
use super::model::{id_for, VmKind, ADMIN_ACCOUNT, USER_ACCOUNT};
use super::{error, Reply, Zone};
use crate::apis::ApiSpec;

/// cserrorcode of a plain `ServerApiException`.
pub const CS_SERVER_API: i64 = 9999;
/// cserrorcode of `InvalidParameterValueException`.
pub const CS_INVALID_PARAM: i64 = 4350;

/// What a uuid parameter refers to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Entity {
    Zone,
    Pod,
    Cluster,
    Domain,
    Account,
    User,
    PhysNet,
    Vpc,
    Network,
    Router,
    SystemVm,
    GuestVm,
    AnyVm,
    Host,
    MgmtServer,
    Job,
    Nic,
    Offering,
    Template,
    VpcOffering,
    /// A physical network's service provider.
    Provider,
    /// A virtual router element, an internal load balancer element.
    RouterElement,
    InternalLbElement,
    Volume,
    Event,
    Alert,
    Webhook,
    WebhookDelivery,
    /// Something the simulated zone has none of (templates, projects, storage, ...).
    Absent,
}

/// The entity a uuid parameter of `command` names.
fn entity(command: &str, param: &str) -> Entity {
    match param {
        "id" => match command {
            "listZones" => Entity::Zone,
            "listPhysicalNetworks" | "updatePhysicalNetwork" => Entity::PhysNet,
            "listRouters"
            | "rebootRouter"
            | "stopRouter"
            | "startRouter"
            | "changeServiceForRouter" => Entity::Router,
            "updateNetworkServiceProvider" => Entity::Provider,
            "listVirtualRouterElements" | "configureVirtualRouterElement" => Entity::RouterElement,
            "listInternalLoadBalancerElements" | "configureInternalLoadBalancerElement" => {
                Entity::InternalLbElement
            }
            "listVolumes" => Entity::Volume,
            "listNetworks" | "restartNetwork" => Entity::Network,
            "listVPCs" | "restartVPC" => Entity::Vpc,
            "listSystemVms" | "destroySystemVm" | "rebootSystemVm" | "startSystemVm"
            | "stopSystemVm" => Entity::SystemVm,
            "listHosts" | "prepareHostForMaintenance" | "cancelHostMaintenance" | "updateHost" => {
                Entity::Host
            }
            "listDomains" => Entity::Domain,
            "listAccounts" => Entity::Account,
            "listVPCOfferings" => Entity::VpcOffering,
            "listClusters" => Entity::Cluster,
            "listServiceOfferings" => Entity::Offering,
            "listTemplates" => Entity::Template,
            "listManagementServers" => Entity::MgmtServer,
            "listVirtualMachines" => Entity::GuestVm,
            "listEvents" => Entity::Event,
            "listAlerts" => Entity::Alert,
            "listWebhooks" | "updateWebhook" | "deleteWebhook" => Entity::Webhook,
            "listWebhookDeliveries" | "deleteWebhookDelivery" | "executeWebhookDelivery" => {
                Entity::WebhookDelivery
            }
            _ => Entity::Absent,
        },
        "startid" => Entity::Event,
        "webhookid" => Entity::Webhook,
        "managementserverid" => Entity::MgmtServer,
        "zoneid" => Entity::Zone,
        "podid" => Entity::Pod,
        "clusterid" => Entity::Cluster,
        "domainid" => Entity::Domain,
        "accountid" => Entity::Account,
        "userid" => Entity::User,
        "physicalnetworkid" => Entity::PhysNet,
        "vpcid" => Entity::Vpc,
        "networkid" | "associatednetworkid" => Entity::Network,
        "hostid" => Entity::Host,
        "virtualmachineid" => Entity::AnyVm,
        "jobid" => Entity::Job,
        "nicid" => Entity::Nic,
        "serviceofferingid" => Entity::Offering,
        "templateid" => Entity::Template,
        "nspid" => Entity::Provider,
        _ => Entity::Absent,
    }
}

impl Zone {
    /// Whether `id` names an entity of that kind (removed VMs included, as the server's
    /// lookup includes removed rows).
    fn exists(&self, entity: Entity, id: &str) -> bool {
        let w = &self.world;
        let vm = |f: &dyn Fn(&VmKind) -> bool| w.vms.iter().any(|v| v.id == id && f(&v.kind));
        match entity {
            Entity::Zone => w.zone_id == id,
            Entity::Pod => w.pod_id == id,
            Entity::Cluster => w.clusters.iter().any(|c| c.id == id),
            Entity::Offering => {
                w.offerings.iter().any(|o| o.id == id) || super::catalog::is_system_offering(id)
            }
            Entity::Template => w.templates.iter().any(|t| t.id == id),
            Entity::VpcOffering => super::catalog::VPC_OFFERINGS
                .iter()
                .any(|(name, ..)| super::catalog::vpc_offering_id(name) == id),
            Entity::Domain => w.domain_id == id,
            Entity::Account => [ADMIN_ACCOUNT, USER_ACCOUNT]
                .iter()
                .any(|a| id_for("account", a) == id),
            Entity::User => [ADMIN_ACCOUNT, USER_ACCOUNT]
                .iter()
                .any(|a| id_for("user", a) == id),
            Entity::PhysNet => w.physnets.iter().any(|p| p.id == id),
            Entity::Vpc => w.vpcs.iter().any(|v| v.id == id),
            Entity::Network => w.networks.iter().any(|n| n.id == id),
            Entity::Router => vm(&|k| matches!(k, VmKind::Router { .. })),
            Entity::SystemVm => vm(&|k| matches!(k, VmKind::SystemVm { .. })),
            Entity::GuestVm => vm(&|k| matches!(k, VmKind::Guest { .. })),
            Entity::AnyVm => vm(&|_| true),
            Entity::Host => self.hosts_json().iter().any(|h| h["id"] == id),
            Entity::MgmtServer => w.mgmt.id == id,
            Entity::Job => self.jobs.iter().any(|j| j.jobid == id),
            Entity::Nic => w
                .vms
                .iter()
                .any(|v| nics(w, v).iter().any(|n| n["id"] == id)),
            Entity::Provider => super::providers::is_provider(w, id),
            Entity::RouterElement => {
                super::providers::is_element(w, super::providers::Element::VirtualRouter, id)
            }
            Entity::InternalLbElement => {
                super::providers::is_element(w, super::providers::Element::InternalLb, id)
            }
            Entity::Volume => super::volumes::is_volume(w, id),
            Entity::Event => self.events().any(|e| e.id == id),
            Entity::Alert => self.alerts().any(|a| a.id == id),
            Entity::Webhook => self.webhooks().iter().any(|w| w.id == id),
            Entity::WebhookDelivery => self.deliveries().iter().any(|d| d.id == id),
            Entity::Absent => false,
        }
    }

    /// Checks `params` against the command's spec; the error is the whole reply.
    pub(super) fn validate(
        &self,
        spec: &ApiSpec,
        params: &BTreeMap<String, String>,
    ) -> Result<(), Reply> {
        let cmd = spec.name.to_ascii_lowercase();
        let key = &spec.response_envelope_key;
        let plain = |text: String| error(key, 431, CS_SERVER_API, text);
        let invalid = |text: String| error(key, 431, CS_INVALID_PARAM, text);
        for p in spec.params.iter().filter(|p| p.required) {
            if params.get(&p.name).is_none_or(|v| v.is_empty()) {
                return Err(plain(format!(
                    "Unable to execute API command {cmd} due to missing parameter {}",
                    p.name
                )));
            }
        }
        for p in &spec.params {
            let Some(v) = params.get(&p.name) else {
                continue;
            };
            let bad = || {
                invalid(format!(
                    "Unable to execute API command {cmd} due to invalid value. Invalid parameter {} value={v} due to incorrect long value format, or entity does not exist or due to incorrect parameter annotation for the field in api cmd class.",
                    p.name
                ))
            };
            let ok = match p.kind.as_str() {
                "uuid" => v.is_empty() || self.exists(entity(&spec.name, &p.name), v),
                "list" if p.name == "ids" => v
                    .split(',')
                    .all(|id| self.exists(entity(&spec.name, "id"), id.trim())),
                "boolean" => v.eq_ignore_ascii_case("true") || v.eq_ignore_ascii_case("false"),
                "integer" => v.trim().parse::<i32>().is_ok(),
                "date" => is_date(v),
                _ => true,
            };
            if !ok {
                return Err(bad());
            }
        }
        self.check_paging(params, &plain, &invalid)
    }

    fn check_paging(
        &self,
        params: &BTreeMap<String, String>,
        plain: &dyn Fn(String) -> Reply,
        invalid: &dyn Fn(String) -> Reply,
    ) -> Result<(), Reply> {
        let page = params.get("page").and_then(|p| p.parse::<i64>().ok());
        let size = params.get("pagesize").and_then(|s| s.parse::<i64>().ok());
        let limit = self.world.page_size_limit();
        match (page, size) {
            (Some(_), None) => Err(plain(
                "\"pagesize\" parameter is required when \"page\" is specified".into(),
            )),
            (None, Some(n)) if n != -1 => Err(plain(
                "\"page\" parameter is required when \"pagesize\" is specified".into(),
            )),
            (Some(_), Some(-1)) => Err(invalid(
                "Can't specify page parameter when pagesize is -1 (Unlimited)".into(),
            )),
            (_, Some(n)) if n == 0 || n < -1 => Err(invalid(format!(
                "Page size must be a positive number or -1 (unlimited), not {n}"
            ))),
            (_, Some(n)) if limit.is_some_and(|max| n > 0 && n as u64 > max) => {
                Err(invalid(format!(
                    "Page size can't exceed max allowed page size value: {}",
                    limit.unwrap_or_default()
                )))
            }
            (Some(p), _) if p < 1 => Err(invalid(format!("Page must be 1 or more, not {p}"))),
            _ => Ok(()),
        }
    }
}

/// `yyyy-MM-dd` or `yyyy-MM-dd HH:mm:ss`, the date forms list commands accept.
fn is_date(v: &str) -> bool {
    v.parse::<jiff::civil::Date>().is_ok() || v.parse::<jiff::civil::DateTime>().is_ok()
}
