//! The `remedy` binary: parse arguments, run the command, exit with its code. Nothing else.

fn main() {
    std::process::exit(remedy::cli::main(std::env::args().collect()));
}
