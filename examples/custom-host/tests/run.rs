//! Build the default auth component and run the custom host against it;
//! then a hostile one, to show the sandbox holds.

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use madx_test_support::build_component;

/// Run the custom host; a host that hangs fails the test instead of
/// hanging it.
fn custom_host(args: &[&str], component: &Path) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_custom-host"))
        .args(args)
        .arg(component)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run custom-host");
    let deadline = Instant::now() + Duration::from_secs(60);
    while child.try_wait().expect("poll custom-host").is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("custom-host {args:?} hung: its sandbox did not stop the call");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    child.wait_with_output().expect("custom-host output")
}

/// The guide's block for this example (docs/plugins.md, "A host of your
/// own"), run as written; `cargo run` of this package is this test's own
/// build of it.
#[test]
fn the_guide_s_commands_issue_and_verify_with_the_auth_component() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let guide = std::fs::read_to_string(workspace.join("docs/plugins.md")).expect("read guide");
    let (_, after) = guide
        .split_once("```sh test=custom-host\n")
        .expect("the guide has a block for the custom host");
    let (block, _) = after.split_once("```").expect("the block ends");
    let run = "cargo run --release -p madx-example-custom-host --";
    assert!(block.contains(run), "{block}");
    let script = block.replace(run, env!("CARGO_BIN_EXE_custom-host"));
    let output = Command::new("bash")
        .args(["-euo", "pipefail", "-c", &script])
        .current_dir(&workspace)
        .env_remove("CARGO_TARGET_DIR")
        .output()
        .expect("run bash");
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

#[test]
fn the_custom_host_stops_a_component_at_its_time_and_memory_limits() {
    let component = build_component("madx-example-hostile-auth");

    // Well-behaved requests get the default rules.
    let output = custom_host(&["--user-id", "carol"], &component);
    assert!(output.status.success(), "{output:?}");

    let output = custom_host(&["--user-id", "loop", "--budget-ms", "200"], &component);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the issue call ran past its budget of 200 ms"),
        "{stderr}"
    );

    let output = custom_host(&["--user-id", "alloc", "--memory-mib", "16"], &component);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains("the issue call hit its memory cap of 16 MiB"),
        "{stderr}"
    );
}
