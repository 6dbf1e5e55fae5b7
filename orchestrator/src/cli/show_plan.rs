//! `remedy show-plan`: a saved plan printed for people, for a change ticket or as JSON, with a
//! warning when the file no longer checks (expired, edited). Rendering is
//! `crate::planfile::render`'s.

use crate::error::ExitCode;
use crate::planfile::render::Format;
use crate::planfile::SavedPlan;

use super::output::fail;

/// `remedy show-plan`.
pub(super) fn run(file: &std::path::Path, format: Format) -> ExitCode {
    let saved = match SavedPlan::read(file) {
        Ok(s) => s,
        Err(e) => return fail(&e),
    };
    if let Err(e) = saved.check_file(None, jiff::Timestamp::now()) {
        eprintln!("warning: {}", e.render(false).trim_end());
    }
    out!(
        "{}",
        crate::planfile::render::render(&saved, format, Some(&file.display().to_string()))
    );
    ExitCode::Success
}
