//! Build the default auth component and run the custom host against it.

use std::path::Path;
use std::process::Command;

#[test]
fn a_custom_host_issues_and_verifies_with_the_auth_component() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let target = workspace.join("target/plugins");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .current_dir(&workspace)
        .args([
            "build",
            "--quiet",
            "--target",
            "wasm32-wasip2",
            "--profile",
            "plugin",
        ])
        .args(["--package", "madx-auth", "--target-dir"])
        .arg(&target)
        .status()
        .expect("run cargo");
    assert!(status.success(), "building the auth component failed");
    let component = target.join("wasm32-wasip2/plugin/madx_auth.wasm");

    let output = Command::new(env!("CARGO_BIN_EXE_custom-host"))
        .arg(&component)
        .output()
        .expect("run custom-host");
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        stdout.contains("verified: user Some(\"alice\"), channels [\"news.*\"]"),
        "{stdout}"
    );
    assert!(
        stdout.contains("second use refused: otp-reused"),
        "{stdout}"
    );
}
