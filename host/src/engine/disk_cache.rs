//! The on-disk cache of compiled components (`[engine] cache_dir`): one `.cwasm` per (wasm
//! sha256, engine compatibility hash), in a directory only this user can write; anything else
//! is refused rather than loaded, since compiled code is trusted by wasmtime.
use super::*;

impl TierEngine {
    pub(super) fn load_cached(
        &self,
        dir: &Path,
        key: &str,
    ) -> Result<Option<Component>, LoadError> {
        let path = dir.join(format!("{key}.cwasm"));
        if !path.exists() {
            return Ok(None);
        }
        check_private(dir)?;
        check_private(&path)?;
        // SAFETY: the file sits in a directory that only this user can write, under a name
        // derived from the wasm's digest and this engine's compatibility hash, and was written
        // by `store_cached` (atomically, via a temporary file and rename). wasmtime also checks
        // the artifact's header against the engine.
        match unsafe { Component::deserialize_file(&self.inner.engine, &path) } {
            Ok(c) => Ok(Some(c)),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "discarding unusable cached component");
                let _ = std::fs::remove_file(&path);
                StatCounters::count(&self.inner.stats.disk_discarded);
                Ok(None)
            }
        }
    }

    pub(super) fn store_cached(
        &self,
        dir: &Path,
        key: &str,
        component: &Component,
    ) -> Result<(), LoadError> {
        let bytes = component
            .serialize()
            .map_err(|e| LoadError::Cache(format!("{e:#}")))?;
        create_private_dir(dir)?;
        let tmp = dir.join(format!(".{key}.{}.tmp", std::process::id()));
        write_private(&tmp, &bytes)?;
        std::fs::rename(&tmp, dir.join(format!("{key}.cwasm")))
            .map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))
    }
}

#[cfg(unix)]
pub(super) fn create_private_dir(dir: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::DirBuilderExt;
    if !dir.exists() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))?;
    }
    check_private(dir)
}

#[cfg(unix)]
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))?;
    f.write_all(bytes)
        .and_then(|()| f.sync_all())
        .map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))
}

/// Refuses a cache path that another user owns or that others can write to.
#[cfg(unix)]
pub(super) fn check_private(path: &Path) -> Result<(), LoadError> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::symlink_metadata(path)
        .map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))?;
    let uid = rustix::process::geteuid().as_raw();
    if meta.uid() != uid || meta.mode() & 0o022 != 0 || meta.file_type().is_symlink() {
        return Err(LoadError::Cache(format!(
            "{} must be owned by uid {uid}, not a symlink, and not writable by group or others; \
             refusing to load compiled code from it",
            path.display()
        )));
    }
    Ok(())
}

#[cfg(not(unix))]
pub(super) fn create_private_dir(dir: &Path) -> Result<(), LoadError> {
    std::fs::create_dir_all(dir).map_err(|e| LoadError::Cache(format!("{}: {e}", dir.display())))
}
#[cfg(not(unix))]
pub(super) fn write_private(path: &Path, bytes: &[u8]) -> Result<(), LoadError> {
    std::fs::write(path, bytes).map_err(|e| LoadError::Cache(format!("{}: {e}", path.display())))
}
#[cfg(not(unix))]
pub(super) fn check_private(_path: &Path) -> Result<(), LoadError> {
    Err(LoadError::Cache(
        "the disk cache is only supported on unix".into(),
    ))
}
