//! Playbooks: the model as written ([`model`]), reading files ([`load`]) and compiling them into
//! a checked, typed [`compile::Program`].

pub mod compile;
pub mod load;
pub mod model;

pub use compile::{compile, Kind, Param, Phase, Program, Scope, Setting, Step, Undo};
pub use load::{load, Loaded};
