//! A compiled component with what the host read from its type: which world it
//! implements, against which contract version, and what it imports.

use wasmtime::component::{Component, InstancePre};

use crate::capabilities::HostState;
use crate::config::StageKind;
use crate::engine::{Contract, Engine, PluginError};

const CONTRACT_PACKAGE: &str = "runner:plugin/";

/// What a component is, read from its exports and imports.
#[derive(Clone, Debug)]
pub struct PluginShape {
    pub kind: StageKind,
    /// The version in the names of its exported interfaces (`runner:plugin/source@0.2.0`),
    /// whether or not this host supports it.
    pub contract_version: String,
    pub imports: Vec<String>,
    pub exports: Vec<String>,
}

impl PluginShape {
    fn read(engine: &wasmtime::Engine, component: &Component) -> Result<Self, String> {
        let ty = component.component_type();
        let imports: Vec<String> = ty
            .imports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let exports: Vec<String> = ty
            .exports(engine)
            .map(|(name, _)| name.to_string())
            .collect();
        let mut found = None;
        for export in &exports {
            let Some(rest) = export.strip_prefix(CONTRACT_PACKAGE) else {
                continue;
            };
            let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
            let kind = match interface {
                "source" => StageKind::Source,
                "transform" => StageKind::Transform,
                "sink" => StageKind::Sink,
                _ => continue,
            };
            if found.is_some() {
                return Err(
                    "it exports more than one of runner:plugin/source, transform, sink".into(),
                );
            }
            found = Some((kind, version.to_string()));
        }
        let Some((kind, contract_version)) = found else {
            return Err(format!(
                "it is not a runner plugin: it exports none of runner:plugin/source, transform or sink (exports: {})",
                if exports.is_empty() {
                    "nothing".to_string()
                } else {
                    exports.join(", ")
                }
            ));
        };
        Ok(PluginShape {
            kind,
            contract_version,
            imports,
            exports,
        })
    }
}

/// A component ready to instantiate.
#[derive(Clone)]
pub struct LoadedPlugin {
    pub name: String,
    /// sha256 of the component's bytes.
    pub digest: [u8; 32],
    pub shape: PluginShape,
    /// The contract version it was built against, which decides its bindings.
    pub contract: Contract,
    pub(crate) pre: InstancePre<HostState>,
}

impl LoadedPlugin {
    pub(crate) fn new(
        engine: &Engine,
        name: &str,
        digest: [u8; 32],
        component: Component,
    ) -> Result<Self, PluginError> {
        let shape = PluginShape::read(engine.wasmtime(), &component).map_err(|reason| {
            PluginError::Load {
                plugin: name.to_string(),
                reason,
            }
        })?;
        let contract = Contract::of(&shape.contract_version).ok_or_else(|| PluginError::Load {
            plugin: name.to_string(),
            reason: format!(
                "it was built against contract runner:plugin@{}, and this runner supports {}",
                if shape.contract_version.is_empty() {
                    "(no version)"
                } else {
                    &shape.contract_version
                },
                Contract::supported_list()
            ),
        })?;
        let pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| PluginError::Load {
                plugin: name.to_string(),
                reason: format!("it imports something this runner does not provide: {e:#}"),
            })?;
        Ok(LoadedPlugin {
            name: name.to_string(),
            digest,
            shape,
            contract,
            pre,
        })
    }
}
