fn main() {
    std::process::exit(rowshift::cli::main());
}
