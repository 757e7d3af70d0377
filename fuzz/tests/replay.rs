//! Every kept fuzzer input (the minimized corpus and the crash inputs that
//! were found and fixed) through the same target functions, on stable, so
//! `cargo test` keeps them fixed without nightly or libFuzzer.

use std::path::Path;

#[test]
fn every_kept_input_passes_its_target() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    for (name, target) in madx_fuzz::TARGETS {
        let mut replayed = 0;
        for folder in ["corpus", "artifacts"] {
            let Ok(entries) = std::fs::read_dir(root.join(folder).join(name)) else {
                continue;
            };
            for entry in entries {
                let path = entry.expect("readable folder").path();
                let input = std::fs::read(&path).expect("readable input");
                // A panic names the input that caused it.
                let outcome = std::panic::catch_unwind(|| target(&input));
                assert!(outcome.is_ok(), "{name}: {} fails", path.display());
                replayed += 1;
            }
        }
        // An empty corpus would make this test pass without checking anything.
        assert!(replayed > 0, "no kept inputs for target {name}");
    }
}
