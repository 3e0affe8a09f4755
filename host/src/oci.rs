//! Plugins from an OCI registry (feature `oci`): `plugin = "oci://REGISTRY/REPO[:TAG]@sha256:HEX"`.
//!
//! A plugin is a wasm OCI artifact in the CNCF layout (`wkg`, Spin, wasmCloud): config media type
//! `application/vnd.wasm.config.v0+json`, one `application/wasm` layer. `tierhost push` also
//! attaches the plugin's detached signature (`<file>.sig`, see [`crate::signing`]) as a second
//! layer, so a tier with `signed_by` verifies a pulled plugin exactly as a file.
//!
//! Pulling ([`ensure`]) fetches the manifest, checks that its sha256 is the pinned digest (a
//! registry cannot substitute another manifest), takes the wasm layer (refused above
//! `[oci] max_bytes`), checks the layer's sha256 against the manifest, and only then writes the
//! plugin into the store (`<store>/sha256/<manifest digest>/plugin.wasm`, with `manifest.json`
//! and `plugin.wasm.sig`), by rename, so a half-written file is never loaded. A pinned plugin
//! already in the store is checked against its stored manifest and not fetched again; a tag
//! without a digest (`[oci] allow_tags`) is resolved at every load. A failed pull fails the
//! tier's load with the reason, so a reload keeps the version that was serving.
use std::path::{Path, PathBuf};
use std::time::Duration;

use oci_client::client::{ClientConfig, ClientProtocol, Config as OciBlobConfig, ImageLayer};
use oci_client::manifest::{OCI_IMAGE_MEDIA_TYPE, OciImageManifest};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use sha2::{Digest, Sha256};

use crate::config::{OciConfig, OciRef};
use crate::error::LoadError;

/// Config media type of a wasm component artifact (CNCF wasm OCI artifact layout).
pub const WASM_CONFIG_MEDIA_TYPE: &str = "application/vnd.wasm.config.v0+json";
/// Layer media type of the component.
pub const WASM_LAYER_MEDIA_TYPE: &str = "application/wasm";
/// Layer media type of a tierhost detached signature (`<file>.sig`).
pub const SIGNATURE_MEDIA_TYPE: &str = "application/vnd.tierhost.signature.v1+json";
/// The largest signature layer accepted.
const MAX_SIGNATURE_BYTES: u64 = 64 << 10;
/// Environment variables holding registry credentials (basic auth); anonymous without them.
pub const USERNAME_ENV: &str = "TIERHOST_OCI_USERNAME";
/// See [`USERNAME_ENV`].
pub const PASSWORD_ENV: &str = "TIERHOST_OCI_PASSWORD";

/// The error of a pull or push, as text (the registry's own message included).
fn failed(reference: &str, message: impl std::fmt::Display) -> LoadError {
    LoadError::Pull {
        reference: reference.to_string(),
        message: message.to_string(),
    }
}

fn client(config: &OciConfig) -> Client {
    // reqwest's rustls needs a process-wide provider: ring, as the server's TLS (idempotent).
    let _ = rustls::crypto::ring::default_provider().install_default();
    let mut client_config = ClientConfig {
        protocol: ClientProtocol::HttpsExcept(config.insecure.clone()),
        ..ClientConfig::default()
    };
    client_config.read_timeout = Some(Duration::from_secs(config.timeout_s));
    client_config.connect_timeout = Some(Duration::from_secs(config.timeout_s));
    Client::new(client_config)
}

fn auth() -> RegistryAuth {
    match (std::env::var(USERNAME_ENV), std::env::var(PASSWORD_ENV)) {
        (Ok(user), Ok(password)) => RegistryAuth::Basic(user, password),
        _ => RegistryAuth::Anonymous,
    }
}

fn reference_of(r: &OciRef) -> Reference {
    match (&r.tag, &r.digest) {
        (_, Some(hex)) => Reference::with_digest(
            r.registry.clone(),
            r.repository.clone(),
            format!("sha256:{hex}"),
        ),
        (Some(tag), None) => {
            Reference::with_tag(r.registry.clone(), r.repository.clone(), tag.clone())
        }
        (None, None) => unreachable!("OciRef::parse requires a tag or a digest"),
    }
}

fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// The manifest's wasm layer and optional signature layer.
fn layers(manifest: &OciImageManifest, max_bytes: u64) -> Result<(usize, Option<usize>), String> {
    let wasm: Vec<usize> = (0..manifest.layers.len())
        .filter(|&i| {
            let media = manifest.layers[i].media_type.as_str();
            media == WASM_LAYER_MEDIA_TYPE || media == oci_client::manifest::WASM_LAYER_MEDIA_TYPE
        })
        .collect();
    let [wasm] = wasm[..] else {
        return Err(format!(
            "expected exactly one {WASM_LAYER_MEDIA_TYPE} layer, the manifest has {} (layers: {})",
            wasm.len(),
            manifest
                .layers
                .iter()
                .map(|l| l.media_type.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ));
    };
    let size = u64::try_from(manifest.layers[wasm].size).unwrap_or(u64::MAX);
    if size > max_bytes {
        return Err(format!(
            "the plugin layer is {size} bytes, above [oci] max_bytes = {max_bytes}"
        ));
    }
    let signature = manifest
        .layers
        .iter()
        .position(|l| l.media_type == SIGNATURE_MEDIA_TYPE);
    if let Some(i) = signature
        && u64::try_from(manifest.layers[i].size).unwrap_or(u64::MAX) > MAX_SIGNATURE_BYTES
    {
        return Err(format!(
            "the signature layer is {} bytes, above {MAX_SIGNATURE_BYTES}",
            manifest.layers[i].size
        ));
    }
    Ok((wasm, signature))
}

/// Checks a plugin already in the store: its manifest hashes to `hex` and names the plugin's
/// sha256. `Ok(false)` when it is not there (or incomplete).
fn stored_is_valid(dir: &Path, hex: &str, max_bytes: u64) -> Result<bool, String> {
    let (Ok(manifest), Ok(plugin)) = (
        std::fs::read(dir.join("manifest.json")),
        std::fs::read(dir.join("plugin.wasm")),
    ) else {
        return Ok(false);
    };
    if sha256_hex(&manifest) != hex {
        return Err(format!(
            "the stored manifest in {} does not hash to the pinned digest",
            dir.display()
        ));
    }
    let parsed: OciImageManifest =
        serde_json::from_slice(&manifest).map_err(|e| format!("stored manifest: {e}"))?;
    let (wasm, _) = layers(&parsed, max_bytes)?;
    if parsed.layers[wasm].digest != format!("sha256:{}", sha256_hex(&plugin)) {
        return Err(format!(
            "{} does not match its manifest (changed on disk?)",
            dir.join("plugin.wasm").display()
        ));
    }
    Ok(true)
}

/// A blob being downloaded, refused as soon as it grows past `limit` bytes (the size the
/// manifest declares): a registry that streams more is cut off, not buffered.
struct Capped {
    bytes: Vec<u8>,
    limit: usize,
}

impl tokio::io::AsyncWrite for Capped {
    fn poll_write(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        if self.bytes.len() + buf.len() > self.limit {
            return std::task::Poll::Ready(Err(std::io::Error::other(format!(
                "the registry sent more than the {} bytes the manifest declares",
                self.limit
            ))));
        }
        self.bytes.extend_from_slice(buf);
        std::task::Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// Writes `bytes` to `path` through a temporary file and a rename.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension(format!("tmp-{}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}

/// What [`ensure`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pulled {
    /// The plugin file in the store.
    pub file: PathBuf,
    /// The manifest digest (hex) it came from.
    pub digest: String,
    /// Whether it was fetched now (false: already in the store, checked).
    pub fetched: bool,
    /// Whether a signature came with it.
    pub signed: bool,
}

/// Makes sure the plugin `reference` (an `oci://` reference) is in the store at `local` (its
/// [`OciRef::local_file`]): fetched and verified if it is not there, checked if it is.
pub async fn ensure(
    config: &OciConfig,
    reference: &str,
    local: &Path,
) -> Result<Pulled, LoadError> {
    let parsed = OciRef::parse(reference).map_err(|e| failed(reference, e))?;
    let dir = local
        .parent()
        .ok_or_else(|| failed(reference, "store path has no directory"))?;
    if let Some(hex) = &parsed.digest {
        match stored_is_valid(dir, hex, config.max_bytes) {
            Ok(true) => {
                return Ok(Pulled {
                    file: local.to_path_buf(),
                    digest: hex.clone(),
                    fetched: false,
                    signed: dir.join("plugin.wasm.sig").exists(),
                });
            }
            Ok(false) => {}
            // A damaged store entry is fetched again, not trusted.
            Err(problem) => {
                tracing::warn!(%reference, %problem, "store entry refused; pulling again")
            }
        }
    }
    let client = client(config);
    let image = reference_of(&parsed);
    let auth = auth();
    let (manifest_bytes, _) = client
        .pull_manifest_raw(&image, &auth, &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| failed(reference, e))?;
    let digest = sha256_hex(&manifest_bytes);
    if let Some(pinned) = &parsed.digest
        && &digest != pinned
    {
        return Err(failed(
            reference,
            format!("the registry served a manifest with sha256:{digest}, not the pinned one"),
        ));
    }
    // A tag that still points at what the store holds: nothing to fetch.
    if parsed.digest.is_none()
        && std::fs::read(dir.join("manifest.json")).is_ok_and(|m| m == manifest_bytes[..])
        && stored_is_valid(dir, &digest, config.max_bytes) == Ok(true)
    {
        return Ok(Pulled {
            file: local.to_path_buf(),
            digest,
            fetched: false,
            signed: dir.join("plugin.wasm.sig").exists(),
        });
    }
    let manifest: OciImageManifest = serde_json::from_slice(&manifest_bytes)
        .map_err(|e| failed(reference, format!("not an OCI image manifest: {e}")))?;
    if manifest.config.media_type != WASM_CONFIG_MEDIA_TYPE
        && manifest.config.media_type != oci_client::manifest::WASM_CONFIG_MEDIA_TYPE
    {
        return Err(failed(
            reference,
            format!(
                "not a wasm component artifact: config media type {}, expected {WASM_CONFIG_MEDIA_TYPE}",
                manifest.config.media_type
            ),
        ));
    }
    let (wasm, signature) =
        layers(&manifest, config.max_bytes).map_err(|e| failed(reference, e))?;
    let pull = |i: usize| {
        let client = &client;
        let image = &image;
        let layer = &manifest.layers[i];
        async move {
            // `layers` checked the declared sizes against the limits.
            let limit = usize::try_from(layer.size).unwrap_or(0);
            let mut capped = Capped {
                bytes: Vec::with_capacity(limit.min(1 << 20)),
                limit,
            };
            client
                .pull_blob(image, layer, &mut capped)
                .await
                .map_err(|e| failed(reference, e))?;
            let out = capped.bytes;
            if format!("sha256:{}", sha256_hex(&out)) != layer.digest {
                return Err(failed(
                    reference,
                    format!("layer {} does not match its digest", layer.digest),
                ));
            }
            Ok::<_, LoadError>(out)
        }
    };
    let plugin = pull(wasm).await?;
    let sig = match signature {
        Some(i) => Some(pull(i).await?),
        None => None,
    };
    let io = |e: std::io::Error| failed(reference, format!("cannot write {}: {e}", dir.display()));
    std::fs::create_dir_all(dir).map_err(io)?;
    // Signature and manifest first, the plugin last: the plugin's presence means complete.
    let sig_path = dir.join("plugin.wasm.sig");
    match &sig {
        Some(bytes) => write_atomically(&sig_path, bytes).map_err(io)?,
        None => match std::fs::remove_file(&sig_path) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(io(e)),
        },
    }
    write_atomically(&dir.join("manifest.json"), &manifest_bytes).map_err(io)?;
    write_atomically(local, &plugin).map_err(io)?;
    tracing::info!(%reference, digest = %format!("sha256:{digest}"), bytes = plugin.len(), signed = sig.is_some(), "plugin pulled");
    Ok(Pulled {
        file: local.to_path_buf(),
        digest,
        fetched: true,
        signed: sig.is_some(),
    })
}

/// Pushes the component `file` (and `<file>.sig` when it exists) to `reference` (an `oci://`
/// reference with a tag); returns the manifest's digest (hex), what a config pins.
pub async fn push(config: &OciConfig, file: &Path, reference: &str) -> Result<String, LoadError> {
    let parsed = OciRef::parse(reference).map_err(|e| failed(reference, e))?;
    if parsed.tag.is_none() || parsed.digest.is_some() {
        return Err(failed(
            reference,
            "push to a tag (oci://REGISTRY/REPO:TAG); the digest is what the push prints",
        ));
    }
    let read = |path: &Path| {
        std::fs::read(path).map_err(|e| failed(reference, format!("{}: {e}", path.display())))
    };
    let plugin = read(file)?;
    let mut layers = vec![ImageLayer::new(
        plugin,
        WASM_LAYER_MEDIA_TYPE.to_string(),
        None,
    )];
    let sig_path = crate::signing::signature_path(file);
    if sig_path.exists() {
        layers.push(ImageLayer::new(
            read(&sig_path)?,
            SIGNATURE_MEDIA_TYPE.to_string(),
            None,
        ));
    }
    let blob_config = OciBlobConfig::new(b"{}".to_vec(), WASM_CONFIG_MEDIA_TYPE.to_string(), None);
    let manifest = OciImageManifest::build(&layers, &blob_config, None);
    let manifest_bytes =
        serde_json::to_vec(&manifest).map_err(|e| failed(reference, format!("manifest: {e}")))?;
    let client = client(config);
    let image = reference_of(&parsed);
    client
        .push(&image, &layers, blob_config, &auth(), Some(manifest))
        .await
        .map_err(|e| failed(reference, e))?;
    // The registry stores the manifest as pushed (serde_json of the same value): its digest.
    let (served, _) = client
        .pull_manifest_raw(&image, &auth(), &[OCI_IMAGE_MEDIA_TYPE])
        .await
        .map_err(|e| failed(reference, e))?;
    let digest = sha256_hex(&served);
    if served != manifest_bytes {
        tracing::debug!(%reference, "the registry re-encoded the manifest; pinning what it serves");
    }
    Ok(digest)
}

#[cfg(test)]
mod tests {
    use super::*;
    use oci_client::manifest::OciDescriptor;
    use tokio::io::AsyncWriteExt;

    fn manifest(layers: &[(&str, i64)]) -> OciImageManifest {
        OciImageManifest {
            layers: layers
                .iter()
                .map(|(media, size)| OciDescriptor {
                    media_type: media.to_string(),
                    size: *size,
                    ..OciDescriptor::default()
                })
                .collect(),
            ..OciImageManifest::default()
        }
    }

    #[test]
    fn layers_are_limited_and_exactly_one_must_be_the_component() {
        let ok = manifest(&[(WASM_LAYER_MEDIA_TYPE, 100), (SIGNATURE_MEDIA_TYPE, 10)]);
        assert_eq!(layers(&ok, 100), Ok((0, Some(1))));
        let big = layers(&manifest(&[(WASM_LAYER_MEDIA_TYPE, 101)]), 100).unwrap_err();
        assert!(big.contains("above [oci] max_bytes = 100"), "{big}");
        let none = layers(&manifest(&[("application/octet-stream", 1)]), 100).unwrap_err();
        assert!(
            none.contains("exactly one application/wasm layer, the manifest has 0"),
            "{none}"
        );
        let two = layers(
            &manifest(&[(WASM_LAYER_MEDIA_TYPE, 1), (WASM_LAYER_MEDIA_TYPE, 1)]),
            100,
        )
        .unwrap_err();
        assert!(two.contains("has 2"), "{two}");
        let sig = manifest(&[(WASM_LAYER_MEDIA_TYPE, 1), (SIGNATURE_MEDIA_TYPE, 1 << 20)]);
        assert!(layers(&sig, 100).unwrap_err().contains("signature layer"));
    }

    #[tokio::test]
    async fn a_blob_longer_than_declared_is_cut_off_while_it_streams() {
        let mut capped = Capped {
            bytes: Vec::new(),
            limit: 8,
        };
        capped.write_all(b"12345").await.unwrap();
        let error = capped.write_all(b"6789").await.unwrap_err();
        assert!(
            error.to_string().contains("more than the 8 bytes"),
            "{error}"
        );
        assert_eq!(capped.bytes, b"12345", "nothing past the limit is kept");
    }
}
