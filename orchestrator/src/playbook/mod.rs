//! Playbooks: the model as written ([`model`]), reading files ([`load`]) and compiling them into
//! a checked, typed [`compile::Program`].

pub mod compile;
pub mod load;
pub mod model;

pub use compile::{
    compile, Kind, Param, Phase, Program, ReportSpec, Rows, Scope, Setting, Step, Undo,
    REPORT_RESULT_FIELDS,
};
pub use load::{load, Loaded};
