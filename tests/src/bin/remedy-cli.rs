//! The `remedy` command line, built inside this crate so that its tests can run it as a real
//! child process (`env!("CARGO_BIN_EXE_remedy-cli")`; Cargo gives a crate's tests only its own
//! binaries). Its `main` is the `remedy` binary's (`orchestrator/src/main.rs`), line for line.

fn main() {
    std::process::exit(remedy::cli::main(std::env::args().collect()));
}
