//! End-to-end tests through the library: the engine with the scripted fake transport, and the
//! CloudStack client against the simulated zone over real HTTP on 127.0.0.1.

mod cloudstack;
mod coordination;
mod daemon;
mod diagnostics;
mod engine;
mod features;
mod lab_inventory;
mod plans;
mod refresh;
mod report;
mod rollback_truth;
mod shipped;
mod sim_ssh;
mod triggers;
mod warm_pool;
mod zone;
