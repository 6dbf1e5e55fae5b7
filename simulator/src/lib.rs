//! `cloudstack-sim`: a simulated Apache CloudStack zone.
//!
//! Two layers:
//! - [`zone`]: the zone model (zones, physical networks, VPCs, networks, redundant routers,
//!   system VMs, hosts, settings, management servers, async jobs) and the API commands that read
//!   and change it. Pure logic over a clock passed in; no I/O. Seeded from [`scenario`] files.
//! - [`server`]: the HTTP front (`/client/api`) that decodes and verifies signed requests like a
//!   management server ([`signature`]), injects transport faults ([`faults`]) and hands the call
//!   to the zone.

#![allow(clippy::result_large_err)]

pub mod apis;
pub mod faults;
pub mod hooks;
pub mod scenario;
pub mod server;
pub mod signature;
pub mod ssh;
pub mod testing;
pub mod zone;
