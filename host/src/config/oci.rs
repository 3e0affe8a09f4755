//! `[oci]`: plugins by reference from an OCI registry (`plugin = "oci://REGISTRY/REPO[:TAG]@sha256:HEX"`).
//!
//! A reference is pinned by the digest of its manifest; a tag alone is accepted only with
//! `allow_tags = true` (the tag is then resolved at every load). Pulled plugins are kept in
//! `store`, one directory per manifest digest, so a restart or a reload with the same reference
//! reads the disk, not the registry. The pulling itself is in [`crate::oci`] (feature `oci`).
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Default `[oci] max_bytes`: the largest plugin layer pulled (64 MiB).
pub(crate) const DEFAULT_OCI_MAX_BYTES: u64 = 64 << 20;

/// `[oci]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OciConfig {
    /// Where pulled plugins are kept (relative to the config's directory).
    pub store: PathBuf,
    /// Accept `oci://` references without a digest (resolved at every load: a tag can move).
    pub allow_tags: bool,
    /// Registries (`host:port`) spoken to over plain HTTP instead of HTTPS (a registry on
    /// loopback or a private network).
    pub insecure: Vec<String>,
    /// The largest plugin layer pulled, in bytes.
    pub max_bytes: u64,
    /// Timeout of one registry request, in seconds.
    pub timeout_s: u64,
}

impl Default for OciConfig {
    fn default() -> Self {
        Self {
            store: PathBuf::from(".tierhost-oci"),
            allow_tags: false,
            insecure: Vec::new(),
            max_bytes: DEFAULT_OCI_MAX_BYTES,
            timeout_s: 30,
        }
    }
}

impl OciConfig {
    pub(crate) fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.max_bytes == 0 {
            return Err(("max_bytes", "must be at least 1".into()));
        }
        if self.timeout_s == 0 {
            return Err(("timeout_s", "must be at least 1".into()));
        }
        if let Some(bad) = self
            .insecure
            .iter()
            .find(|r| r.is_empty() || r.contains('/'))
        {
            return Err((
                "insecure",
                format!("`{bad}` is not a registry host[:port] (no scheme, no path)"),
            ));
        }
        Ok(())
    }
}

/// A parsed `oci://` reference.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct OciRef {
    /// Registry host, with its port if any (`127.0.0.1:5000`, `ghcr.io`).
    pub registry: String,
    /// Repository path (`team/rules`).
    pub repository: String,
    /// Tag, if given.
    pub tag: Option<String>,
    /// The manifest's sha256 (64 lowercase hex digits), if pinned.
    pub digest: Option<String>,
}

impl OciRef {
    /// Parses `oci://REGISTRY/REPO[:TAG][@sha256:HEX]`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let rest = text
            .strip_prefix("oci://")
            .ok_or_else(|| format!("`{text}` does not start with oci://"))?;
        let (name, digest) = match rest.split_once('@') {
            Some((name, digest)) => {
                let hex = digest.strip_prefix("sha256:").ok_or_else(|| {
                    format!("`{text}`: the digest must be sha256:<64 hex digits>")
                })?;
                if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(format!(
                        "`{text}`: the digest must be sha256:<64 hex digits>"
                    ));
                }
                (name, Some(hex.to_ascii_lowercase()))
            }
            None => (rest, None),
        };
        let (registry, path) = name
            .split_once('/')
            .ok_or_else(|| format!("`{text}`: expected oci://REGISTRY/REPOSITORY[:TAG]"))?;
        // A tag follows the last `:` of the last path segment (a registry port has its own).
        let (repository, tag) = match path.rsplit_once(':') {
            Some((repo, tag)) if !tag.contains('/') => (repo, Some(tag.to_string())),
            _ => (path, None),
        };
        let ok_repo = !repository.is_empty()
            && repository.split('/').all(|segment| {
                !segment.is_empty()
                    && segment.bytes().all(|b| {
                        b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b)
                    })
            });
        if registry.is_empty() || !ok_repo {
            return Err(format!(
                "`{text}`: expected oci://REGISTRY/REPOSITORY[:TAG] (repository: lowercase letters, \
                 digits, `.`, `_`, `-`, `/`)"
            ));
        }
        if let Some(tag) = &tag
            && (tag.is_empty()
                || tag.len() > 128
                || !tag
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b)))
        {
            return Err(format!("`{text}`: `{tag}` is not a valid tag"));
        }
        if tag.is_none() && digest.is_none() {
            return Err(format!(
                "`{text}`: give a tag, a digest (@sha256:...) or both"
            ));
        }
        Ok(Self {
            registry: registry.to_string(),
            repository: repository.to_string(),
            tag,
            digest,
        })
    }

    /// The directory of this reference's plugin in the store `store`: one per manifest digest,
    /// or, for a tag without a digest, one per tag (re-resolved at every load).
    pub fn local_dir(&self, store: &Path) -> PathBuf {
        match &self.digest {
            Some(hex) => store.join("sha256").join(hex),
            None => {
                let safe = |s: &str| s.replace([':', '/'], "_");
                store
                    .join("tags")
                    .join(safe(&self.registry))
                    .join(safe(&self.repository))
                    .join(self.tag.as_deref().unwrap_or("latest"))
            }
        }
    }

    /// The plugin file of this reference in the store `store`.
    pub fn local_file(&self, store: &Path) -> PathBuf {
        self.local_dir(store).join("plugin.wasm")
    }
}

impl std::fmt::Display for OciRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "oci://{}/{}", self.registry, self.repository)?;
        if let Some(tag) = &self.tag {
            write!(f, ":{tag}")?;
        }
        if let Some(hex) = &self.digest {
            write!(f, "@sha256:{hex}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef";

    #[test]
    fn references_parse_with_ports_tags_and_digests() {
        let r = OciRef::parse(&format!("oci://127.0.0.1:5000/team/rules:v2@sha256:{HEX}")).unwrap();
        assert_eq!(r.registry, "127.0.0.1:5000");
        assert_eq!(r.repository, "team/rules");
        assert_eq!(r.tag.as_deref(), Some("v2"));
        assert_eq!(r.digest.as_deref(), Some(HEX));
        assert_eq!(
            r.to_string(),
            format!("oci://127.0.0.1:5000/team/rules:v2@sha256:{HEX}")
        );
        assert_eq!(
            r.local_file(Path::new("/s")),
            PathBuf::from(format!("/s/sha256/{HEX}/plugin.wasm"))
        );
        let r = OciRef::parse("oci://ghcr.io/acme/rules:latest").unwrap();
        assert_eq!(
            (r.tag.as_deref(), r.digest.as_deref()),
            (Some("latest"), None)
        );
        assert_eq!(
            r.local_file(Path::new("/s")),
            PathBuf::from("/s/tags/ghcr.io/acme_rules/latest/plugin.wasm")
        );
        let r = OciRef::parse(&format!("oci://r.io/a@sha256:{}", HEX.to_uppercase())).unwrap();
        assert_eq!(r.digest.as_deref(), Some(HEX), "digests are lowercased");
    }

    #[test]
    fn bad_settings_are_refused() {
        let bad = |c: OciConfig| c.validate().unwrap_err().0;
        assert_eq!(
            bad(OciConfig {
                max_bytes: 0,
                ..OciConfig::default()
            }),
            "max_bytes"
        );
        assert_eq!(
            bad(OciConfig {
                timeout_s: 0,
                ..OciConfig::default()
            }),
            "timeout_s"
        );
        assert_eq!(
            bad(OciConfig {
                insecure: vec!["http://r:5000".into()],
                ..OciConfig::default()
            }),
            "insecure"
        );
        assert!(OciConfig::default().validate().is_ok());
    }

    #[test]
    fn bad_references_are_refused_with_the_reason() {
        for (text, says) in [
            ("oci://registry", "expected oci://REGISTRY/REPOSITORY"),
            ("oci://r.io/Rules:v1", "lowercase"),
            ("oci://r.io/rules", "give a tag, a digest"),
            ("oci://r.io/rules@sha256:abc", "64 hex digits"),
            ("oci://r.io/rules@md5:abc", "sha256:<64 hex digits>"),
            ("oci://r.io/rules:bad tag", "not a valid tag"),
            ("oci://r.io//rules:v1", "expected oci://"),
            ("http://r.io/rules:v1", "does not start with oci://"),
        ] {
            let e = OciRef::parse(text).unwrap_err();
            assert!(e.contains(says), "{text}: {e}");
        }
    }
}
