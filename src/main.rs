//! The `rowshift` command line: the binary, and the only place that prints.
//!
//! Its modules (`src/cli/`) belong to the binary, not the library, so that a program
//! using rowshift as a library compiles none of clap, indicatif, ctrlc or anyhow.

mod cli;

fn main() {
    std::process::exit(cli::main());
}
