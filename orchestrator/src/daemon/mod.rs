//! `remedy daemon`: scheduled detection and self-healing that never fights an operator.
//!
//! Built so far: `jobs` (the jobs file and its schedules) and `state` (what survives a restart:
//! each job's last results, and per job and target the fixes, cooldowns and open circuits).

pub mod jobs;
pub mod state;
