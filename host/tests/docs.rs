//! Every code block of `docs/plugins.md` is compiled or run, so the plugin
//! author's guide cannot drift from the product.
//!
//! A block's info string says how it is checked:
//!
//! - ```` ```rust file=PATH ```` (also `toml`, `wit`): the block is a verbatim
//!   part of `PATH`, a file the suite compiles or loads.
//! - ```` ```sh ```` runs with bash from the workspace root, or from
//!   `cwd=DIR`; `cwd=scratch` is an empty directory holding the default
//!   components as `my-auth.wasm` and `my-router.wasm`. `madx-pusher` is
//!   the binary under test; `madx-pusher serve` listens on a free loopback
//!   port and stops once it is up (it must come up).
//! - ```` ```toml ```` without `file=` is a config file: the binary must start
//!   with it, from the scratch directory.
//! - ```` ```sh test=NAME ```` is run by the test suite of the workspace
//!   package `NAME` (`examples/NAME/tests/`), which builds what the block
//!   builds; this test checks that such a suite reads the guide.
//!
//! Any other block fails the test: a block nobody checks is a block that
//! rots.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// One fenced block: where it starts, its info string and its text.
struct Block {
    line: usize,
    language: String,
    options: Vec<(String, String)>,
    text: String,
}

impl Block {
    fn option(&self, name: &str) -> Option<&str> {
        self.options
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

fn blocks(markdown: &str) -> Vec<Block> {
    let mut blocks = Vec::new();
    let mut lines = markdown.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        let Some(info) = line.strip_prefix("```") else {
            continue;
        };
        let mut words = info.split_whitespace();
        let language = words.next().unwrap_or_default().to_owned();
        let options = words
            .map(|word| match word.split_once('=') {
                Some((key, value)) => (key.to_owned(), value.to_owned()),
                None => (word.to_owned(), String::new()),
            })
            .collect();
        let mut text = String::new();
        for (_, line) in lines.by_ref() {
            if line.starts_with("```") {
                break;
            }
            text.push_str(line);
            text.push('\n');
        }
        blocks.push(Block {
            line: number + 1,
            language,
            options,
            text,
        });
    }
    blocks
}

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_owned()
}

/// The scratch directory: the default components under the names the docs
/// use for "your component", and `madx-pusher` on the `PATH`.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new() -> Scratch {
        let dir = tempfile::tempdir().expect("temp dir");
        let components = workspace().join("target/plugins");
        let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
            .current_dir(workspace())
            .env_remove("CARGO_TARGET_DIR")
            .args(["build", "--quiet", "--target", "wasm32-wasip2"])
            .args([
                "--profile",
                "plugin",
                "-p",
                "madx-auth",
                "-p",
                "madx-router",
            ])
            .arg("--target-dir")
            .arg(&components)
            .status()
            .expect("run cargo");
        assert!(status.success(), "building the default components failed");
        let built = components.join("wasm32-wasip2/plugin");
        for (file, name) in [
            ("madx_auth.wasm", "my-auth.wasm"),
            ("madx_router.wasm", "my-router.wasm"),
        ] {
            std::fs::copy(built.join(file), dir.path().join(name)).expect("copy component");
        }

        // `serve` must come up (first line of its banner), then it stops.
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).expect("bin dir");
        let wrapper = bin.join("madx-pusher");
        std::fs::write(
            &wrapper,
            format!(
                r#"#!/usr/bin/env bash
real={real:?}
[ "$1" = serve ] || exec "$real" "$@"
log=$(mktemp)
"$real" "$@" --listen 127.0.0.1:0 >"$log" 2>&1 &
pid=$!
for _ in $(seq 1200); do
    if grep -q "listening on" "$log"; then
        kill "$pid"; wait "$pid"; cat "$log"; exit 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
done
kill "$pid" 2>/dev/null; cat "$log"; echo "madx-pusher serve did not come up" >&2; exit 1
"#,
                real = env!("CARGO_BIN_EXE_madx-pusher"),
            ),
        )
        .expect("write wrapper");
        let mut permissions = std::fs::metadata(&wrapper)
            .expect("wrapper metadata")
            .permissions();
        std::os::unix::fs::PermissionsExt::set_mode(&mut permissions, 0o755);
        std::fs::set_permissions(&wrapper, permissions).expect("make wrapper executable");
        Scratch { dir }
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Run a shell script as a reader would, with `madx-pusher` on the PATH.
    fn run(&self, script: &str, cwd: &Path) -> Output {
        let path = format!(
            "{}:{}",
            self.path().join("bin").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Command::new("bash")
            .args(["-euo", "pipefail", "-c", script])
            .current_dir(cwd)
            .env("PATH", path)
            // The docs' paths assume cargo's default target directory.
            .env_remove("CARGO_TARGET_DIR")
            .env("NO_COLOR", "1")
            .output()
            .expect("run bash")
    }
}

fn check(block: &Block, scratch: &Scratch) -> Result<(), String> {
    if let Some(file) = block.option("file") {
        let contents = std::fs::read_to_string(workspace().join(file))
            .map_err(|error| format!("cannot read {file}: {error}"))?;
        return if contents.contains(&block.text) {
            Ok(())
        } else {
            Err(format!("the block is not a verbatim part of {file}"))
        };
    }
    if let Some(package) = block.option("test") {
        let tests = workspace().join("examples").join(package).join("tests");
        let reads_the_guide = std::fs::read_dir(&tests)
            .map_err(|error| format!("cannot read {}: {error}", tests.display()))?
            .filter_map(|entry| std::fs::read_to_string(entry.ok()?.path()).ok())
            .any(|source| {
                source.contains("docs/plugins.md") && source.contains(&format!("test={package}"))
            });
        return if reads_the_guide {
            Ok(())
        } else {
            Err(format!("no test in {} runs this block", tests.display()))
        };
    }
    let cwd = match block.option("cwd") {
        Some("scratch") => scratch.path().to_owned(),
        Some(dir) => workspace().join(dir),
        None => workspace(),
    };
    let output = match block.language.as_str() {
        "sh" => scratch.run(&block.text, &cwd),
        "toml" => {
            let config = scratch.path().join("pusher.toml");
            std::fs::write(&config, &block.text).map_err(|error| error.to_string())?;
            scratch.run("madx-pusher serve --config pusher.toml", scratch.path())
        }
        other => return Err(format!("no rule checks a `{other}` block without file=")),
    };
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "exited with {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        ))
    }
}

#[test]
fn every_code_block_of_the_plugin_guide_compiles_or_runs() {
    let guide = std::fs::read_to_string(workspace().join("docs/plugins.md")).expect("read guide");
    let blocks = blocks(&guide);
    assert!(blocks.len() >= 10, "found only {} blocks", blocks.len());
    let scratch = Scratch::new();
    let failures: Vec<String> = blocks
        .iter()
        .filter_map(|block| {
            check(block, &scratch)
                .err()
                .map(|why| format!("docs/plugins.md:{} ({}): {why}", block.line, block.language))
        })
        .collect();
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

#[test]
fn a_block_that_differs_from_its_file_is_caught() {
    let markdown = "text\n```rust file=wit/worlds.wit\nfn not_in_that_file() {}\n```\n";
    let blocks = blocks(markdown);
    assert_eq!(blocks.len(), 1);
    assert_eq!(blocks[0].line, 2);
    assert_eq!(blocks[0].option("file"), Some("wit/worlds.wit"));
    let scratch = Scratch {
        dir: tempfile::tempdir().expect("temp dir"),
    };
    assert!(check(&blocks[0], &scratch).is_err());
}
