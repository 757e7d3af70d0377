//! Which of a component's imports the host links, decided by the very
//! linker its plugins are instantiated with (not by a list of names).
//!
//! `Linker::instantiate_pre` type-checks every import, in order, but stops
//! at the first one it cannot satisfy. To judge each import on its own, the
//! probe checks import `k` with every later import replaced by a stand-in
//! that always type-checks, and with the earlier imports the host lacks
//! replaced too: `instantiate_pre` then succeeds exactly when the host
//! provides import `k` as the component imports it (name, version and
//! types).

use wasmtime::Engine;
use wasmtime::component::types::ComponentItem;
use wasmtime::component::{Component, Linker, LinkerInstance, ResourceType};

use super::HostState;

/// One import of a component.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Import {
    /// As the component names it, e.g. `wasi:io/streams@0.2.3`.
    pub name: String,
    pub linked: Linked,
}

/// Whether the host links an import.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Linked {
    Provided,
    /// Not provided; why, as the linker says it.
    Missing(String),
    /// The probe could not tell (an import kind it cannot stand in for);
    /// whether the component loads at all is still decided by the linker.
    Unknown,
}

/// The imports of `component`, each judged against `linker`.
pub(super) fn probe(
    engine: &Engine,
    linker: &Linker<HostState>,
    component: &Component,
) -> Vec<Import> {
    let imports: Vec<(String, ComponentItem)> = component
        .component_type()
        .imports(engine)
        .map(|(name, import)| (name.to_owned(), import.ty))
        .collect();
    let judged = |linked: &dyn Fn(usize) -> Linked| {
        imports
            .iter()
            .enumerate()
            .map(|(index, (name, _))| Import {
                name: name.clone(),
                linked: linked(index),
            })
            .collect()
    };
    if linker.instantiate_pre(component).is_ok() {
        return judged(&|_| Linked::Provided);
    }

    // The resources each import introduces or refers to, so that a stand-in
    // defines only new resources and leaves references to earlier ones be.
    let resources: Vec<Vec<ResourceType>> = imports
        .iter()
        .map(|(_, item)| resources_in(engine, item))
        .collect();
    let before = |index: usize| -> Vec<ResourceType> {
        resources[..index].iter().flatten().copied().collect()
    };

    let mut base = linker.clone();
    base.allow_shadowing(true);
    let mut verdicts = Vec::with_capacity(imports.len());
    for (index, (name, item)) in imports.iter().enumerate() {
        let mut trial = base.clone();
        let mut seen = before(index + 1);
        let later = imports[index + 1..].iter().try_for_each(|(name, item)| {
            stand_in(engine, &mut trial.root(), name, item, &mut seen)
        });
        if later.is_err() {
            return judged(&|_| Linked::Unknown);
        }
        match trial.instantiate_pre(component) {
            Ok(_) => verdicts.push(Linked::Provided),
            Err(error) => {
                verdicts.push(Linked::Missing(reason(error)));
                // Judge the later imports as if this one were there.
                if stand_in(engine, &mut base.root(), name, item, &mut before(index)).is_err() {
                    return judged(&|_| Linked::Unknown);
                }
            }
        }
    }
    judged(&|index| verdicts[index].clone())
}

/// What the linker says is wrong, without the outermost context (which
/// only repeats the import's name).
fn reason(error: wasmtime::Error) -> String {
    let error = anyhow::Error::from(error);
    let causes: Vec<String> = error.chain().skip(1).map(ToString::to_string).collect();
    if causes.is_empty() {
        error.to_string()
    } else {
        causes.join(": ")
    }
}

fn resources_in(engine: &Engine, item: &ComponentItem) -> Vec<ResourceType> {
    match item {
        ComponentItem::Resource(resource) => vec![*resource],
        ComponentItem::ComponentInstance(instance) => instance
            .exports(engine)
            .flat_map(|(_, export)| resources_in(engine, &export.ty))
            .collect(),
        _ => Vec::new(),
    }
}

/// The type of every stand-in resource.
struct StandIn;

/// Define `name` in `scope` as something that type-checks as `item`:
/// functions that fail if called (they never are: the probe only
/// pre-instantiates) and fresh resources for those not `seen` before.
fn stand_in(
    engine: &Engine,
    scope: &mut LinkerInstance<'_, HostState>,
    name: &str,
    item: &ComponentItem,
    seen: &mut Vec<ResourceType>,
) -> Result<(), ()> {
    match item {
        ComponentItem::ComponentFunc(func) if !func.async_() => scope
            .func_new(name, |_, _, _, _| {
                Err(wasmtime::format_err!("a stand-in of the import probe"))
            })
            .map_err(drop),
        ComponentItem::ComponentInstance(instance) => {
            let mut inner = scope.instance(name).map_err(drop)?;
            instance.exports(engine).try_for_each(|(export, extern_)| {
                stand_in(engine, &mut inner, export, &extern_.ty, seen)
            })
        }
        // A reference to a resource defined earlier needs no definition.
        ComponentItem::Resource(resource) if seen.contains(resource) => Ok(()),
        ComponentItem::Resource(resource) => {
            seen.push(*resource);
            scope
                .resource(name, ResourceType::host::<StandIn>(), |_, _| Ok(()))
                .map_err(drop)
        }
        ComponentItem::Type(_) => Ok(()),
        // Async functions, modules, components, core functions: the host
        // links none of these, and there is no stand-in for them here.
        _ => Err(()),
    }
}
