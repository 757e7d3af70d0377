//! The part of a Spin manifest (version 2) the harness acts on: the build
//! command and `source` of a component, its HTTP routes, its variables
//! (application variables with defaults or `required`, component variables
//! as `{{ name }}` templates over them) and its `allowed_outbound_hosts`.
//! Keys the harness does not use are ignored, as they do not change what
//! the component sees.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail, ensure};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
struct ManifestFile {
    spin_manifest_version: u32,
    #[serde(default)]
    variables: BTreeMap<String, VariableDecl>,
    #[serde(default)]
    trigger: Triggers,
    #[serde(default)]
    component: BTreeMap<String, ComponentDecl>,
}

#[derive(Debug, Default, Deserialize)]
struct Triggers {
    #[serde(default)]
    http: Vec<HttpTrigger>,
}

/// One `[[trigger.http]]`.
#[derive(Debug, Clone, Deserialize)]
pub struct HttpTrigger {
    pub route: String,
    pub component: String,
}

/// One application `[variables]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct VariableDecl {
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    #[allow(dead_code)] // Secrecy matters to providers, not to resolution.
    secret: bool,
}

#[derive(Debug, Clone, Deserialize)]
struct ComponentDecl {
    source: String,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    build: Option<BuildDecl>,
}

#[derive(Debug, Clone, Deserialize)]
struct BuildDecl {
    command: String,
    workdir: Option<String>,
}

/// A parsed `spin.toml`.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// The directory of the manifest: relative paths start there.
    dir: PathBuf,
    variables: BTreeMap<String, VariableDecl>,
    triggers: Vec<HttpTrigger>,
    components: BTreeMap<String, ComponentDecl>,
}

/// A component with its variables resolved, as one instance sees them.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub name: String,
    /// Component variable name to value.
    pub variables: HashMap<String, String>,
    /// `allowed_outbound_hosts`, templates expanded.
    pub allowed_outbound_hosts: Vec<String>,
    /// The routes that reach this component.
    pub routes: Vec<String>,
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Manifest> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let file: ManifestFile =
            toml::from_str(&text).with_context(|| format!("invalid {}", path.display()))?;
        ensure!(
            file.spin_manifest_version == 2,
            "only spin_manifest_version = 2 is supported"
        );
        for name in file.variables.keys() {
            check_variable_name(name)?;
        }
        for (component, declared) in &file.component {
            for (name, template) in &declared.variables {
                check_variable_name(name)?;
                for part in parse_template(template)? {
                    if let Part::Variable(variable) = part
                        && !file.variables.contains_key(variable)
                    {
                        bail!("component {component}: variable {name} uses unknown {variable:?}");
                    }
                }
            }
        }
        for trigger in &file.trigger.http {
            ensure!(
                file.component.contains_key(&trigger.component),
                "route {} names unknown component {}",
                trigger.route,
                trigger.component
            );
        }
        Ok(Manifest {
            dir: manifest_dir(path),
            variables: file.variables,
            triggers: file.trigger.http,
            components: file.component,
        })
    }

    fn component(&self, name: &str) -> anyhow::Result<&ComponentDecl> {
        self.components
            .get(name)
            .with_context(|| format!("no component {name} in the manifest"))
    }

    /// The file `source` names, as a path.
    pub fn source(&self, component: &str) -> anyhow::Result<PathBuf> {
        Ok(self.dir.join(&self.component(component)?.source))
    }

    /// Run the component's `[build] command` (through `sh -c`, in its
    /// `workdir`, as `spin build` does).
    pub fn build(&self, component: &str) -> anyhow::Result<()> {
        let declared = self.component(component)?;
        let Some(build) = &declared.build else {
            return Ok(());
        };
        let workdir = match &build.workdir {
            Some(workdir) => self.dir.join(workdir),
            None => self.dir.clone(),
        };
        let mut command = Command::new("sh");
        command.arg("-c").arg(&build.command).current_dir(&workdir);
        // A harness running under cargo must not pass its own build's
        // settings on to the component's build.
        for variable in [
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_TARGET",
            "CARGO_ENCODED_RUSTFLAGS",
            "RUSTFLAGS",
            "RUSTC_WRAPPER",
            "RUSTC_WORKSPACE_WRAPPER",
            "CARGO_BUILD_RUSTFLAGS",
        ] {
            command.env_remove(variable);
        }
        let status = command
            .status()
            .with_context(|| format!("cannot run the build command {:?}", build.command))?;
        ensure!(
            status.success(),
            "the build command of {component} failed ({status}): {}",
            build.command
        );
        Ok(())
    }

    /// Resolve `component`'s variables from `provided` application values
    /// (as `spin up --variable` or `SPIN_VARIABLE_*` give them) and the
    /// defaults; a `required` variable without a value is an error, as in
    /// Spin, which then refuses to start.
    pub fn resolve(
        &self,
        component: &str,
        provided: &HashMap<String, String>,
    ) -> anyhow::Result<Resolved> {
        let declared = self.component(component)?;
        for name in provided.keys() {
            ensure!(
                self.variables.contains_key(name),
                "variable {name} is not declared in the manifest"
            );
        }
        let mut values = HashMap::new();
        for (name, variable) in &self.variables {
            let value = match (provided.get(name), &variable.default) {
                (Some(value), _) => value.clone(),
                (None, Some(default)) if !variable.required => default.clone(),
                (None, _) => bail!("required variable {name} has no value"),
            };
            values.insert(name.clone(), value);
        }
        let expand = |template: &str| -> anyhow::Result<String> {
            let mut out = String::new();
            for part in parse_template(template)? {
                match part {
                    Part::Literal(text) => out.push_str(text),
                    Part::Variable(name) => out.push_str(
                        values
                            .get(name)
                            .with_context(|| format!("unknown variable {name:?}"))?,
                    ),
                }
            }
            Ok(out)
        };
        let mut variables = HashMap::new();
        for (name, template) in &declared.variables {
            variables.insert(name.clone(), expand(template)?);
        }
        let allowed_outbound_hosts = declared
            .allowed_outbound_hosts
            .iter()
            .map(|host| expand(host))
            .collect::<anyhow::Result<_>>()?;
        let routes = self
            .triggers
            .iter()
            .filter(|trigger| trigger.component == component)
            .map(|trigger| trigger.route.clone())
            .collect();
        Ok(Resolved {
            name: component.to_owned(),
            variables,
            allowed_outbound_hosts,
            routes,
        })
    }
}

/// Does the Spin route `route` match `path`? `/a/b` matches itself;
/// `/a/...` matches `/a` and everything under it.
pub fn route_matches(route: &str, path: &str) -> bool {
    match route.strip_suffix("/...") {
        Some(prefix) => {
            path == prefix
                || path
                    .strip_prefix(prefix)
                    .is_some_and(|rest| rest.starts_with('/'))
        }
        None => path == route || path.strip_suffix('/') == Some(route),
    }
}

/// Spin's rule for variable names: lowercase ASCII letters, digits and
/// `_`, starting with a letter and ending with a letter or digit.
pub fn check_variable_name(name: &str) -> anyhow::Result<()> {
    let bytes = name.as_bytes();
    let valid = !bytes.is_empty()
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'_')
        && bytes[0].is_ascii_lowercase()
        && bytes[bytes.len() - 1].is_ascii_alphanumeric();
    ensure!(
        valid,
        "{name:?} is not a valid Spin variable name (a-z, 0-9 and _, starting with a letter)"
    );
    Ok(())
}

enum Part<'a> {
    Literal(&'a str),
    Variable(&'a str),
}

/// `literal {{ name }} literal`.
fn parse_template(template: &str) -> anyhow::Result<Vec<Part<'_>>> {
    let mut parts = Vec::new();
    let mut rest = template;
    while !rest.is_empty() {
        match rest.find("{{") {
            Some(0) => {
                let (expression, after) = rest[2..]
                    .split_once("}}")
                    .with_context(|| format!("unmatched '{{{{' in {template:?}"))?;
                parts.push(Part::Variable(expression.trim()));
                rest = after;
            }
            Some(at) => {
                parts.push(Part::Literal(&rest[..at]));
                rest = &rest[at..];
            }
            None => {
                parts.push(Part::Literal(rest));
                rest = "";
            }
        }
    }
    Ok(parts)
}

/// The directory relative paths in the manifest start from. A bare
/// `spin.toml` has the parent "", which no command can run in: that is ".".
fn manifest_dir(path: &Path) -> PathBuf {
    path.parent()
        .filter(|parent| !parent.as_os_str().is_empty())
        .map(Path::to_path_buf)
        .unwrap_or_else(|| PathBuf::from("."))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(text: &str) -> anyhow::Result<Manifest> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("spin.toml");
        std::fs::write(&path, text)?;
        Manifest::load(&path)
    }

    const SAMPLE: &str = r#"
        spin_manifest_version = 2
        [application]
        name = "x"
        [variables]
        host = { default = "127.0.0.1:6379" }
        token = { required = true, secret = true }
        [[trigger.http]]
        route = "/a/..."
        component = "c"
        [component.c]
        source = "c.wasm"
        allowed_outbound_hosts = ["redis://{{ host }}"]
        [component.c.variables]
        url = "redis://{{host}}/0"
        token = "{{ token }}"
    "#;

    #[test]
    fn variables_resolve_as_in_spin() {
        let manifest = manifest(SAMPLE).unwrap();
        let error = manifest.resolve("c", &HashMap::new()).unwrap_err();
        assert!(
            error.to_string().contains("required variable token"),
            "{error}"
        );
        let provided = HashMap::from([("token".to_owned(), "t0k".to_owned())]);
        let resolved = manifest.resolve("c", &provided).unwrap();
        assert_eq!(resolved.variables["url"], "redis://127.0.0.1:6379/0");
        assert_eq!(resolved.variables["token"], "t0k");
        assert_eq!(resolved.allowed_outbound_hosts, ["redis://127.0.0.1:6379"]);
        assert_eq!(resolved.routes, ["/a/..."]);
        let unknown = HashMap::from([("nope".to_owned(), String::new())]);
        assert!(manifest.resolve("c", &unknown).is_err());
    }

    #[test]
    fn templates_must_name_declared_variables() {
        let broken = SAMPLE.replace("{{ token }}", "{{ missing }}");
        assert!(manifest(&broken).is_err());
        let unmatched = SAMPLE.replace("{{ token }}", "{{ token");
        assert!(manifest(&unmatched).is_err());
        assert!(check_variable_name("Upper").is_err());
        assert!(check_variable_name("trailing_").is_err());
        assert!(check_variable_name("max_batch2").is_ok());
    }

    #[test]
    fn a_bare_manifest_name_is_relative_to_the_current_directory() {
        assert_eq!(manifest_dir(Path::new("spin.toml")), Path::new("."));
        assert_eq!(manifest_dir(Path::new("./spin.toml")), Path::new("."));
        assert_eq!(
            manifest_dir(Path::new("/srv/app/spin.toml")),
            Path::new("/srv/app")
        );
    }

    #[test]
    fn routes_match_as_in_spin() {
        assert!(route_matches("/v1/tokens", "/v1/tokens"));
        assert!(!route_matches("/v1/tokens", "/v1/tokens/x"));
        assert!(route_matches("/v1/tokens/...", "/v1/tokens/x"));
        assert!(route_matches("/v1/tokens/...", "/v1/tokens/x/y"));
        assert!(route_matches("/v1/tokens/...", "/v1/tokens"));
        assert!(!route_matches("/v1/tokens/...", "/v1/tokensx"));
        assert!(!route_matches("/v1/publish", "/v1/ws"));
    }
}
