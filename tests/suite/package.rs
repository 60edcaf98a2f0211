//! The crate packs for publishing: `cargo package --list` succeeds and lists what the
//! `include` list in Cargo.toml keeps, and nothing of the build or the test suites.

use std::process::Command;

#[test]
fn cargo_package_lists_the_library_samples_and_pipelines_and_no_build_output() {
    // Offline: listing needs no registry, and a test must not reach one.
    let out = Command::new(env!("CARGO"))
        .args(["package", "--list", "--allow-dirty", "--offline"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}{stderr}");
    let files: Vec<&str> = stdout.lines().collect();
    for want in [
        "Cargo.toml",
        "Cargo.lock",
        "README.md",
        "src/lib.rs",
        "src/main.rs",
        "pipelines/quickstart.toml",
        "samples/shop.db",
    ] {
        assert!(files.contains(&want), "{want} is not packed: {stdout}");
    }
    for path in &files {
        assert!(
            !path.starts_with("target/")
                && !path.starts_with("tests/")
                && !path.starts_with("benches/")
                && !path.starts_with(".ci/"),
            "{path} is packed: {stdout}"
        );
    }
}
