//! The physical network's network service providers and the elements behind them, as
//! `cs_physical_network nsps_enabled/nsps_disabled` (ngine_io.cloudstack) drives them: the
//! views of `listNetworkServiceProviders`, `listVirtualRouterElements` and
//! `listInternalLoadBalancerElements`, and what the async `updateNetworkServiceProvider`,
//! `configureVirtualRouterElement` and `configureInternalLoadBalancerElement` check and change
//! (`jobs.rs` queues them; every check runs inside the job, as on the server, so a refusal is a
//! failed job).
//!
//! As in 4.18's `NetworkServiceImpl.updateNetworkServiceProvider`: a state that is not
//! `Enabled`/`Disabled` is 431 (`Shutdown` has its own 431), enabling a provider whose element
//! is disabled is 530 ("Provider is not ready ..."), and a `servicelist` is refused (431) for a
//! provider that cannot enable services one by one or that names an unknown service. The VPC
//! and guest networks of the zone go on as they are whatever a provider's state: the
//! simulator does not model what a disabled provider stops CloudStack from deploying.

use serde_json::{json, Value};

use super::model::{id_for, PhysNet, Provider, World};
use super::Zone;

/// The providers every physical network is seeded with: (name, state, services, element).
/// VirtualRouter, VpcVirtualRouter and InternalLbVm have an element of their own (enabled);
/// ConfigDrive and SecurityGroupProvider do not.
const SEEDED: [(&str, &str, &[&str], Option<bool>); 5] = [
    (
        "VirtualRouter",
        "Enabled",
        &[
            "Dhcp",
            "Dns",
            "Firewall",
            "Gateway",
            "Lb",
            "PortForwarding",
            "SourceNat",
            "StaticNat",
            "UserData",
            "Vpn",
        ],
        Some(true),
    ),
    (
        "VpcVirtualRouter",
        "Enabled",
        &[
            "Dhcp",
            "Dns",
            "Gateway",
            "Lb",
            "NetworkACL",
            "PortForwarding",
            "SourceNat",
            "StaticNat",
            "UserData",
            "Vpn",
        ],
        Some(true),
    ),
    ("InternalLbVm", "Enabled", &["Lb"], Some(true)),
    ("ConfigDrive", "Enabled", &["UserData"], None),
    (
        "SecurityGroupProvider",
        "Disabled",
        &["SecurityGroup"],
        None,
    ),
];

/// The network services a `servicelist` may name (CloudStack's `Network.Service`).
const SERVICES: [&str; 13] = [
    "Vpn",
    "Dhcp",
    "Dns",
    "Gateway",
    "Firewall",
    "Lb",
    "UserData",
    "SourceNat",
    "StaticNat",
    "PortForwarding",
    "SecurityGroup",
    "NetworkACL",
    "Connectivity",
];

/// Which list shows an element, and which configure command changes it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Element {
    /// `listVirtualRouterElements`: the VirtualRouter and VpcVirtualRouter providers' elements.
    VirtualRouter,
    /// `listInternalLoadBalancerElements`: the InternalLbVm provider's element.
    InternalLb,
}

impl Element {
    /// The element kind of a provider, if it has an element of its own.
    fn of(provider: &str) -> Option<Element> {
        match provider {
            "VirtualRouter" | "VpcVirtualRouter" => Some(Element::VirtualRouter),
            "InternalLbVm" => Some(Element::InternalLb),
            _ => None,
        }
    }

    /// The kind a list or configure command is about.
    pub(super) fn of_command(command: &str) -> Option<Element> {
        match command {
            "listVirtualRouterElements" | "configureVirtualRouterElement" => {
                Some(Element::VirtualRouter)
            }
            "listInternalLoadBalancerElements" | "configureInternalLoadBalancerElement" => {
                Some(Element::InternalLb)
            }
            _ => None,
        }
    }

    /// The key of one element in replies and job results.
    pub(super) fn key(self) -> &'static str {
        match self {
            Element::VirtualRouter => "virtualrouterelement",
            Element::InternalLb => "internalloadbalancerelement",
        }
    }
}

/// A physical network's providers as seeded.
pub(super) fn seeded() -> Vec<Provider> {
    SEEDED
        .iter()
        .map(|(name, state, services, element)| Provider {
            name: name.to_string(),
            state: state.to_string(),
            services: services.iter().map(|s| s.to_string()).collect(),
            element: *element,
        })
        .collect()
}

fn nsp_id(pn: &PhysNet, p: &Provider) -> String {
    id_for("nsp", &format!("{}/{}", pn.id, p.name))
}

fn element_id(pn: &PhysNet, p: &Provider) -> String {
    id_for("nspelement", &format!("{}/{}", pn.id, p.name))
}

fn provider_json(pn: &PhysNet, p: &Provider) -> Value {
    json!({
        "id": nsp_id(pn, p), "name": p.name, "physicalnetworkid": pn.id, "state": p.state,
        "servicelist": p.services,
        "canenableindividualservice": p.name != "SecurityGroupProvider",
        "destinationphysicalnetworkid": "0",
    })
}

fn element_json(pn: &PhysNet, p: &Provider) -> Value {
    json!({
        "id": element_id(pn, p), "nspid": nsp_id(pn, p), "enabled": p.element.unwrap_or(false),
    })
}

/// `listNetworkServiceProviders`: every physical network's providers (`lists.rs` filters).
pub(super) fn providers(w: &World) -> Vec<Value> {
    w.physnets
        .iter()
        .flat_map(|pn| pn.providers.iter().map(|p| provider_json(pn, p)))
        .collect()
}

/// `listVirtualRouterElements` / `listInternalLoadBalancerElements`: the elements of that kind.
pub(super) fn elements(w: &World, kind: Element) -> Vec<Value> {
    w.physnets
        .iter()
        .flat_map(|pn| {
            pn.providers
                .iter()
                .filter(move |p| p.element.is_some() && Element::of(&p.name) == Some(kind))
                .map(|p| element_json(pn, p))
        })
        .collect()
}

/// Whether `id` names a provider.
pub(super) fn is_provider(w: &World, id: &str) -> bool {
    w.physnets
        .iter()
        .any(|pn| pn.providers.iter().any(|p| nsp_id(pn, p) == id))
}

/// Whether `id` names an element of that kind.
pub(super) fn is_element(w: &World, kind: Element, id: &str) -> bool {
    elements(w, kind).iter().any(|e| e["id"] == id)
}

impl Zone {
    /// The provider `id`: its physical network's index and its own.
    fn provider_at(&self, id: &str) -> Option<(usize, usize)> {
        self.world.physnets.iter().enumerate().find_map(|(i, pn)| {
            let j = pn.providers.iter().position(|p| nsp_id(pn, p) == id)?;
            Some((i, j))
        })
    }

    /// What updateNetworkServiceProvider checks in its job, in the server's order: the state
    /// name, whether the provider is ready to be enabled (its element enabled), then the
    /// services.
    pub(super) fn provider_check(
        &self,
        id: &str,
        state: Option<&str>,
        services: Option<&str>,
    ) -> Result<(), (u16, String)> {
        let (i, j) = self.provider_at(id).ok_or_else(|| {
            (
                431,
                format!("Network Service Provider id={id}doesn't exist in the system"),
            )
        })?;
        let p = &self.world.physnets[i].providers[j];
        match state.filter(|s| !s.is_empty()) {
            None | Some("Disabled") => {}
            Some("Enabled") if p.element != Some(false) => {}
            Some("Enabled") => {
                return Err((
                    530,
                    "Provider is not ready, cannot Enable the provider, please configure the provider first".into(),
                ))
            }
            Some("Shutdown") => {
                return Err((
                    431,
                    "Updating the provider state to 'Shutdown' is not supported".into(),
                ))
            }
            Some(other) => {
                return Err((
                    431,
                    format!("Unable to resolve state '{other}' to a supported value {{Enabled or Disabled}}"),
                ))
            }
        }
        if let Some(list) = services {
            if p.name == "SecurityGroupProvider" {
                return Err((
                    431,
                    format!(
                        "Cannot update set of Services for this Service Provider '{}'",
                        p.name
                    ),
                ));
            }
            if let Some(bad) = split(list).find(|s| canonical_service(s).is_none()) {
                return Err((431, format!("Invalid Network Service specified={bad}")));
            }
        }
        Ok(())
    }

    /// updateNetworkServiceProvider when its job ends: checked again, then the state and the
    /// services set. The job's result.
    pub(super) fn provider_update(
        &mut self,
        id: &str,
        state: Option<&str>,
        services: Option<&str>,
    ) -> Result<Value, (u16, String)> {
        self.provider_check(id, state, services)?;
        let (i, j) = self.provider_at(id).expect("checked provider");
        let pn = &mut self.world.physnets[i];
        let p = &mut pn.providers[j];
        if let Some(s) = state.filter(|s| !s.is_empty()) {
            p.state = s.to_string();
        }
        if let Some(list) = services {
            p.services = split(list)
                .filter_map(canonical_service)
                .map(str::to_string)
                .collect();
        }
        Ok(json!({"networkserviceprovider": provider_json(pn, &pn.providers[j])}))
    }

    /// configureVirtualRouterElement / configureInternalLoadBalancerElement when the job ends:
    /// the element switched on or off (the provider's own state is left as it is). The job's
    /// result.
    pub(super) fn element_configure(
        &mut self,
        kind: Element,
        id: &str,
        enabled: bool,
    ) -> Result<Value, (u16, String)> {
        for pn in &mut self.world.physnets {
            let Some(j) = pn.providers.iter().position(|p| {
                p.element.is_some() && Element::of(&p.name) == Some(kind) && element_id(pn, p) == id
            }) else {
                continue;
            };
            pn.providers[j].element = Some(enabled);
            return Ok(json!({ kind.key(): element_json(pn, &pn.providers[j]) }));
        }
        Err((530, format!("Failed to configure the {}", kind.key())))
    }
}

/// The items of a comma-separated list parameter.
fn split(list: &str) -> impl Iterator<Item = &str> {
    list.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// A service name as CloudStack spells it (it matches names ignoring case).
fn canonical_service(name: &str) -> Option<&'static str> {
    SERVICES
        .iter()
        .find(|s| s.eq_ignore_ascii_case(name))
        .copied()
}
