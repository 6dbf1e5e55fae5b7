//! What every command uses to print and to fail: the `out!`/`outln!` macros (stdout that ends
//! quietly when the reader went away), whether to color, and [`fail`], which prints an error
//! for the operator and gives its exit code. The exit codes themselves are [`ExitCode`]'s; how
//! a command line clap rejects exits is `main`'s, in `mod.rs`.

use std::io::IsTerminal;

use crate::error::{Error, ExitCode};

/// `print!`/`println!` for a command's output, which is often piped into `head` or `less`: a
/// reader that went away ends the command quietly instead of a panic with a backtrace.
macro_rules! out {
    ($($t:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($t)*) {
            if e.kind() == std::io::ErrorKind::BrokenPipe {
                std::process::exit(0);
            }
        }
    }};
}

/// [`out!`] and a newline, as `println!` is `print!` and a newline.
macro_rules! outln {
    () => { out!("\n") };
    ($($t:tt)*) => {{
        out!($($t)*);
        out!("\n");
    }};
}

/// Whether stdout gets colors: a terminal, and no `NO_COLOR`.
pub(super) fn color() -> bool {
    std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none()
}

/// Prints `e` for the operator on stderr (with colors on a terminal) and returns its exit code.
pub(super) fn fail(e: &Error) -> ExitCode {
    eprint!("{}", e.render(std::io::stderr().is_terminal()));
    e.exit_code()
}
