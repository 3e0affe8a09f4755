//! Loading a plugin: reading the `.wasm` (or an embedded `builtin:` tier), hashing it,
//! compiling it through the engine's cache, pre-instantiating it against the host's linker
//! (which is where a component of the wrong world is refused), and asking it to `describe`
//! itself. All of this happens off the request path.
use std::borrow::Cow;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use sha2::{Digest, Sha256};

use crate::config::{PluginSource, resolve_path};
use crate::engine::TierEngine;
use crate::error::LoadError;
use crate::guest::{self, TierKind, TierPre};
use crate::limits::TierLimits;

/// Deadline for `describe` at load time: generous, since it runs once and off the request path.
const DESCRIBE_DEADLINE: Duration = Duration::from_millis(500);
/// Longest name or version a tier may report.
const MAX_DESCRIPTION_BYTES: usize = 128;

/// What a tier says about itself, plus where it came from.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PluginInfo {
    /// Implementation name from `describe`.
    pub name: String,
    /// Implementation version from `describe`.
    pub version: String,
    /// What the tier says it is.
    pub kind: TierKind,
    /// sha256 of the `.wasm` bytes, hex.
    pub sha256: String,
    /// Where the plugin was loaded from (`builtin:<name>` or a path).
    pub source: String,
}

/// A compiled, pre-instantiated, described tier component.
#[derive(Clone)]
pub struct Plugin {
    engine: TierEngine,
    pre: TierPre,
    info: Arc<PluginInfo>,
}

impl Plugin {
    /// Loads `source` for a tier with `limits` (`describe` runs under them); relative paths
    /// resolve against `base_dir`.
    pub async fn load(
        engine: &TierEngine,
        source: &PluginSource,
        base_dir: &Path,
        limits: &TierLimits,
    ) -> Result<Self, LoadError> {
        let bytes = read_source(source, base_dir)?;
        Self::from_bytes(engine, &source.to_string(), &bytes, limits).await
    }

    /// Loads a component from its bytes for a tier with `limits`. `describe` runs under the
    /// tier's fuel, memory and output limits; its deadline is 500 ms (loading
    /// is off the request path, and a cold first instance on a busy host can take longer than
    /// a fallback tier's few-millisecond call deadline).
    pub async fn from_bytes(
        engine: &TierEngine,
        source: &str,
        wasm: &[u8],
        limits: &TierLimits,
    ) -> Result<Self, LoadError> {
        let sha256 = hex::encode(Sha256::digest(wasm));
        let component = engine.compile(wasm, &sha256)?;
        let instance_pre = engine
            .linker()
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre =
            TierPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let description = guest::describe(
            engine.engine(),
            &pre,
            limits,
            DESCRIBE_DEADLINE,
            engine.deadline_ticks(DESCRIBE_DEADLINE),
        )
        .await
        .map_err(|reason| LoadError::Describe(reason.to_string()))?;
        for (what, value) in [
            ("name", &description.name),
            ("version", &description.version),
        ] {
            if value.is_empty() || value.len() > MAX_DESCRIPTION_BYTES {
                return Err(LoadError::Describe(format!(
                    "{what} must be 1..={MAX_DESCRIPTION_BYTES} bytes, got {}",
                    value.len()
                )));
            }
            // Names and versions reach terminals, logs and metric labels: printable only.
            if value.chars().any(|c| c.is_control()) {
                return Err(LoadError::Describe(format!(
                    "{what} {:?} contains control characters",
                    guest::printable(value.clone())
                )));
            }
        }
        Ok(Self {
            engine: engine.clone(),
            pre,
            info: Arc::new(PluginInfo {
                name: description.name,
                version: description.version,
                kind: description.kind,
                sha256,
                source: source.to_string(),
            }),
        })
    }

    /// The network interface the component imports (`wasi:http/outgoing-handler@...`), if
    /// any: only a tier with `[tier.http]` may load it.
    pub fn network_import(&self) -> Option<String> {
        let component = self.pre.instance_pre().component();
        component
            .component_type()
            .imports(self.engine.engine())
            .map(|(name, _)| name)
            .find(|name| name.starts_with("wasi:http/outgoing-handler"))
            .map(str::to_string)
    }

    /// Identity and digest.
    pub fn info(&self) -> &PluginInfo {
        &self.info
    }

    /// The engine the plugin was compiled for.
    pub fn engine(&self) -> &TierEngine {
        &self.engine
    }

    pub(crate) fn pre(&self) -> &TierPre {
        &self.pre
    }
}

/// A plugin's bytes, wherever they come from.
pub(crate) fn read_source<'a>(
    source: &'a PluginSource,
    base_dir: &Path,
) -> Result<Cow<'a, [u8]>, LoadError> {
    match source {
        PluginSource::Builtin(name) => crate::builtin::get(name)
            .map(Cow::Borrowed)
            .ok_or_else(|| LoadError::UnknownBuiltin(name.clone())),
        PluginSource::Bytes(bytes) => Ok(Cow::Borrowed(bytes)),
        PluginSource::File(path) => {
            let path = resolve_path(base_dir, path);
            std::fs::read(&path)
                .map(Cow::Owned)
                .map_err(|e| LoadError::Read {
                    path,
                    message: e.to_string(),
                })
        }
        // Pulled into the store by the cascade's load (feature `oci`) or `tierhost pull`.
        PluginSource::Oci { reference, local } => {
            let path = resolve_path(base_dir, local);
            std::fs::read(&path)
                .map(Cow::Owned)
                .map_err(|e| LoadError::Pull {
                    reference: reference.clone(),
                    message: if cfg!(feature = "oci") {
                        format!("not in the store ({}: {e})", path.display())
                    } else {
                        format!(
                            "not in the store ({}: {e}), and this build has no `oci` feature to \
                             pull it: run `tierhost pull`",
                            path.display()
                        )
                    },
                })
        }
    }
}
