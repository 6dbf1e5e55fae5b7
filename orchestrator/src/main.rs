//! The `remedy` binary: parse arguments, run the command, exit with its code. Nothing else.

fn main() {
    let code = remedy::cli::main(std::env::args().collect());
    std::process::exit(code.code());
}
