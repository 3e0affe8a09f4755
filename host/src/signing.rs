//! Signed plugins: the `[trust]` keys, the detached signature (`<file>.sig`) that a tier with
//! `signed_by` needs beside its plugin and its model file, and the key and signature files of
//! `tierhost keygen`, `sign` and `verify`.
//!
//! Formats (the README's "Signed plugins" says the same for operators):
//! - **public key** (`[trust]`, and in a signature file): `ed25519:` + the standard base64 of
//!   the 32-byte key.
//! - **private key file**: PKCS#8 PEM (`-----BEGIN PRIVATE KEY-----`), what `openssl genpkey
//!   -algorithm ed25519` writes; `keygen` creates it with mode 0600.
//! - **signature file** `<file>.sig`: JSON `{"format": "tierhost-signature-v1", "algorithm":
//!   "ed25519", "signer", "key", "sha256", "signature"}`; the signature (base64, 64 bytes) is
//!   pure ed25519 over the ASCII text `tierhost-signature-v1 sha256:<hex sha256 of the file>`.
//!   The prefix keeps a signature made for tierhost from meaning anything elsewhere, and the
//!   digest in the file says which build was signed when the bytes no longer match.
//!
//! The key that signed is identified by the public key the signature file carries, looked up in
//! `[trust]`; the `signer` name in the file is only a hint for messages when the key is unknown.
//!
//! This module checks bytes it is given and never reads the file they came from: the loader
//! reads a file once, verifies those bytes and compiles (or grants) the same bytes, so the file
//! cannot change between the check and the use.
use std::collections::BTreeMap;
use std::fmt;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::str::FromStr;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::{DecodePrivateKey, EncodePrivateKey};
use ed25519_dalek::{Signer, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::config::{Config, PluginSource, TierConfig};
use crate::error::{LoadError, SignatureError, SigningError};

/// The `format` of a signature file, and the prefix of the text that is signed.
pub const SIGNATURE_FORMAT: &str = "tierhost-signature-v1";
/// The only algorithm.
const ALGORITHM: &str = "ed25519";
/// Largest signature or key file read: a real one is ~300 bytes, so anything near this is not
/// one, and a huge file cannot make a load allocate.
const MAX_SMALL_FILE_BYTES: u64 = 64 * 1024;

/// Whether `name` can name a key in `[trust]` and a signer in a signature file: 1..=64 ASCII
/// letters, digits, `-`, `_` or `.`, so it is safe in messages, logs and terminals.
pub fn is_key_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

/// An ed25519 public key, written `ed25519:<standard base64 of the 32-byte key>`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct PublicKey(VerifyingKey);

impl FromStr for PublicKey {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, String> {
        let expected =
            "expected `ed25519:<base64 of the 32-byte public key>` (what `tierhost keygen` prints)";
        let encoded = text
            .strip_prefix("ed25519:")
            .ok_or_else(|| format!("not an ed25519 public key: {expected}"))?;
        let bytes = BASE64
            .decode(encoded)
            .map_err(|e| format!("not an ed25519 public key ({e}): {expected}"))?;
        let bytes: [u8; 32] = bytes.try_into().map_err(|b: Vec<u8>| {
            format!(
                "not an ed25519 public key ({} bytes, not 32): {expected}",
                b.len()
            )
        })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| "not an ed25519 public key (not a curve point)".to_string())?;
        // A small-order key verifies signatures it never made; verify_strict refuses it too,
        // but a config naming one is a mistake worth saying at once.
        if key.is_weak() {
            return Err("a weak (small-order) ed25519 key: it cannot vouch for anything".into());
        }
        Ok(Self(key))
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ed25519:{}", BASE64.encode(self.0.as_bytes()))
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{self}")
    }
}

impl Serialize for PublicKey {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// An ed25519 private key, kept in a PKCS#8 PEM file.
pub struct PrivateKey(ed25519_dalek::SigningKey);

impl PrivateKey {
    /// A new key from the operating system's random source.
    pub fn generate() -> Result<Self, SigningError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| SigningError::Random(e.to_string()))?;
        Ok(Self(ed25519_dalek::SigningKey::from_bytes(&seed)))
    }

    /// Reads a PKCS#8 PEM key file.
    pub fn read(path: &Path) -> Result<Self, SigningError> {
        let text = read_small(path).map_err(|e| SigningError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        let text = String::from_utf8(text).map_err(|_| SigningError::Key {
            path: path.to_path_buf(),
            message: "not text".into(),
        })?;
        ed25519_dalek::SigningKey::from_pkcs8_pem(&text)
            .map(Self)
            .map_err(|e| SigningError::Key {
                path: path.to_path_buf(),
                message: e.to_string(),
            })
    }

    /// Writes the key to a new file (never over an existing one), readable by its owner only
    /// (mode 0600 on Unix).
    pub fn write_new(&self, path: &Path) -> Result<(), SigningError> {
        use std::io::Write;
        let io = |e: std::io::Error| SigningError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let pem = self
            .0
            .to_pkcs8_pem(LineEnding::LF)
            .map_err(|e| SigningError::Key {
                path: path.to_path_buf(),
                message: e.to_string(),
            })?;
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut file = options.open(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SigningError::Io {
                path: path.to_path_buf(),
                message: "already exists; a key is never overwritten (remove it first)".into(),
            },
            _ => io(e),
        })?;
        file.write_all(pem.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }

    /// The public key, for `[trust]`.
    pub fn public_key(&self) -> PublicKey {
        PublicKey(self.0.verifying_key())
    }

    /// Signs `bytes` as `signer` (the name the key has in `[trust]`; a hint in messages).
    pub fn sign(&self, signer: &str, bytes: &[u8]) -> SignatureFile {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let signature = self.0.sign(signed_text(&sha256).as_bytes());
        SignatureFile {
            format: SIGNATURE_FORMAT.to_string(),
            algorithm: ALGORITHM.to_string(),
            signer: signer.to_string(),
            key: self.public_key(),
            sha256,
            signature: BASE64.encode(signature.to_bytes()),
        }
    }
}

/// What an ed25519 signature of a tierhost file is made over.
fn signed_text(sha256_hex: &str) -> String {
    format!("{SIGNATURE_FORMAT} sha256:{sha256_hex}")
}

/// The detached signature of `file`: `<file>.sig` beside it.
pub fn signature_path(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".sig");
    PathBuf::from(name)
}

/// The contents of a signature file (`<file>.sig`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignatureFile {
    /// Always [`SIGNATURE_FORMAT`].
    pub format: String,
    /// Always `ed25519`.
    pub algorithm: String,
    /// Who signed, as the signer named the key (unverified: the key below decides).
    pub signer: String,
    /// The public key that made the signature.
    pub key: PublicKey,
    /// sha256 of the signed file, hex.
    pub sha256: String,
    /// The ed25519 signature over `tierhost-signature-v1 sha256:<sha256>`, base64.
    pub signature: String,
}

impl SignatureFile {
    /// Reads and checks the shape of a signature file (not whether it holds: see
    /// [`Signers::verify`]).
    pub fn read(path: &Path) -> Result<Self, SignatureError> {
        let bytes = read_small(path).map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SignatureError::Missing(path.to_path_buf()),
            _ => SignatureError::Unreadable {
                path: path.to_path_buf(),
                message: e.to_string(),
            },
        })?;
        let malformed = |problem: String| SignatureError::Malformed {
            path: path.to_path_buf(),
            problem,
        };
        let file: Self = serde_json::from_slice(&bytes).map_err(|e| malformed(e.to_string()))?;
        if file.format != SIGNATURE_FORMAT {
            return Err(malformed(format!(
                "format is not `{SIGNATURE_FORMAT}`: a newer tierhost may have written it"
            )));
        }
        if file.algorithm != ALGORITHM {
            return Err(malformed(format!("algorithm is not `{ALGORITHM}`")));
        }
        if !is_key_name(&file.signer) {
            return Err(malformed(
                "signer must be 1-64 letters, digits, `-`, `_` or `.`".into(),
            ));
        }
        if file.sha256.len() != 64
            || !file
                .sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(malformed("sha256 is not 64 lowercase hex digits".into()));
        }
        file.signature_bytes().map_err(malformed)?;
        Ok(file)
    }

    fn signature_bytes(&self) -> Result<ed25519_dalek::Signature, String> {
        let bytes = BASE64
            .decode(&self.signature)
            .map_err(|e| format!("signature is not base64: {e}"))?;
        ed25519_dalek::Signature::from_slice(&bytes)
            .map_err(|_| format!("signature is {} bytes, not 64", bytes.len()))
    }

    /// Writes the signature to `path`, replacing it by a rename (a watcher never sees half a
    /// file).
    pub fn write(&self, path: &Path) -> Result<(), SigningError> {
        let io = |e: std::io::Error| SigningError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        };
        let mut text = serde_json::to_string_pretty(self).map_err(|e| SigningError::Io {
            path: path.to_path_buf(),
            message: e.to_string(),
        })?;
        text.push('\n');
        let mut tmp = path.as_os_str().to_owned();
        tmp.push(".tmp");
        std::fs::write(&tmp, text).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}

/// Signs `file` as `signer` with `key`: writes `<file>.sig` beside it (replacing an older
/// one) and returns its path and contents.
pub fn sign_file(
    key: &PrivateKey,
    signer: &str,
    file: &Path,
) -> Result<(PathBuf, SignatureFile), SigningError> {
    let bytes = std::fs::read(file).map_err(|e| SigningError::Io {
        path: file.to_path_buf(),
        message: e.to_string(),
    })?;
    let signature = key.sign(signer, &bytes);
    let path = signature_path(file);
    signature.write(&path)?;
    Ok((path, signature))
}

/// Whose signature a file carried, once it held.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Verified {
    /// The signing key's name in `[trust]`.
    pub signer: String,
    /// sha256 of the verified bytes, hex.
    pub sha256: String,
}

/// The keys a tier accepts: its `signed_by` names, with `[trust]` to tell which key signed.
#[derive(Debug, Clone)]
pub struct Signers {
    accepted: Vec<String>,
    trust: BTreeMap<String, PublicKey>,
}

impl Signers {
    /// Accepts the keys `accepted` names in `trust` (a name missing from `trust` accepts
    /// nothing).
    pub fn new(accepted: Vec<String>, trust: BTreeMap<String, PublicKey>) -> Self {
        Self { accepted, trust }
    }

    /// What `tier` requires (`signed_by` over the config's `[trust]`); `None` when the tier
    /// has no `signed_by`.
    pub fn of_tier(config: &Config, tier: &TierConfig) -> Option<Self> {
        (!tier.signed_by.is_empty())
            .then(|| Self::new(tier.signed_by.clone(), config.trust.clone()))
    }

    /// Checks that `bytes` (read from `file`) carry a signature in `<file>.sig` by one of the
    /// accepted keys.
    pub fn verify(&self, file: &Path, bytes: &[u8]) -> Result<Verified, SignatureError> {
        let signature = SignatureFile::read(&signature_path(file))?;
        let names: Vec<&str> = self
            .trust
            .iter()
            .filter(|(_, key)| **key == signature.key)
            .map(|(name, _)| name.as_str())
            .collect();
        if names.is_empty() {
            return Err(SignatureError::UnknownKey {
                signer: signature.signer,
                key: signature.key.to_string(),
                accepted: self.accepted.clone(),
            });
        }
        let Some(signer) = names
            .iter()
            .find(|name| self.accepted.iter().any(|a| a == *name))
        else {
            return Err(SignatureError::NotAccepted {
                signer: names.join("`, `"),
                accepted: self.accepted.clone(),
            });
        };
        let sha256 = hex::encode(Sha256::digest(bytes));
        if signature.sha256 != sha256 {
            return Err(SignatureError::Mismatch(format!(
                "the file's sha256 is {sha256}, the signature is for {}",
                signature.sha256
            )));
        }
        let valid = signature.signature_bytes().is_ok_and(|sig| {
            signature
                .key
                .0
                .verify_strict(signed_text(&sha256).as_bytes(), &sig)
                .is_ok()
        });
        if !valid {
            return Err(SignatureError::Mismatch(format!(
                "the signature is not one key `{signer}` made over sha256 {sha256}"
            )));
        }
        Ok(Verified {
            signer: signer.to_string(),
            sha256,
        })
    }

    /// [`Self::verify`] as a load error naming the file.
    pub(crate) fn check(&self, file: &Path, bytes: &[u8]) -> Result<Verified, LoadError> {
        self.verify(file, bytes)
            .map_err(|error| LoadError::Signature {
                path: file.to_path_buf(),
                error: Box::new(error),
            })
    }
}

/// Checks the signature of `bytes`, the plugin of a tier that `signers` guard: the plugin must
/// be a file (`builtin:` tiers and bytes given in code carry no detached signature).
pub(crate) fn check_plugin(
    signers: &Signers,
    source: &PluginSource,
    base_dir: &Path,
    bytes: &[u8],
) -> Result<Verified, LoadError> {
    match source.file(base_dir) {
        Some(file) => signers.check(&file, bytes),
        None => Err(LoadError::Signature {
            path: PathBuf::from(source.to_string()),
            error: Box::new(SignatureError::NotAFile(source.to_string())),
        }),
    }
}

/// One file `tierhost verify` checked.
#[derive(Debug, Clone)]
pub struct FileCheck {
    /// The tier.
    pub tier: String,
    /// `plugin` or `model`.
    pub role: &'static str,
    /// The file.
    pub path: PathBuf,
    /// Whose signature it carries, or why it is refused.
    pub outcome: Result<Verified, LoadError>,
}

/// Checks every file of every tier with `signed_by` (its plugin and its model, and those of
/// its `[tier.shadow]` candidate) as loading would, without compiling anything. Tiers without
/// `signed_by` are not listed.
pub fn verify_config(config: &Config) -> Vec<FileCheck> {
    let mut checks = Vec::new();
    for tier in &config.tiers {
        let Some(signers) = Signers::of_tier(config, tier) else {
            continue;
        };
        // The candidate's own files; a model it shares with the live tier is checked once.
        let candidate = tier.candidate().map(|mut c| {
            if c.model == tier.model {
                c.model = None;
            }
            c
        });
        let versions = [(tier, ["plugin", "model"])].into_iter().chain(
            candidate
                .as_ref()
                .map(|c| (c, ["shadow plugin", "shadow model"])),
        );
        for (version, [plugin_role, model_role]) in versions {
            let outcome =
                crate::plugin::read_source(&version.plugin, &config.base_dir).and_then(|bytes| {
                    check_plugin(&signers, &version.plugin, &config.base_dir, &bytes)
                });
            checks.push(FileCheck {
                tier: tier.name.clone(),
                role: plugin_role,
                path: version
                    .plugin
                    .file(&config.base_dir)
                    .unwrap_or_else(|| PathBuf::from(version.plugin.to_string())),
                outcome,
            });
            if let Some(model) = &version.model {
                let path = config.resolve(model);
                let outcome = crate::cascade::read_model(&path)
                    .and_then(|bytes| signers.check(&path, &bytes));
                checks.push(FileCheck {
                    tier: tier.name.clone(),
                    role: model_role,
                    path,
                    outcome,
                });
            }
        }
    }
    checks
}

/// Reads a key or signature file of at most [`MAX_SMALL_FILE_BYTES`].
fn read_small(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    std::fs::File::open(path)?
        .take(MAX_SMALL_FILE_BYTES + 1)
        .read_to_end(&mut bytes)?;
    if bytes.len() as u64 > MAX_SMALL_FILE_BYTES {
        return Err(std::io::Error::other(format!(
            "larger than {MAX_SMALL_FILE_BYTES} bytes"
        )));
    }
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> PrivateKey {
        PrivateKey(ed25519_dalek::SigningKey::from_bytes(&[7; 32]))
    }

    fn signed(dir: &Path, key: &PrivateKey, bytes: &[u8]) -> PathBuf {
        let file = dir.join("tier.wasm");
        std::fs::write(&file, bytes).unwrap();
        key.sign("team", bytes)
            .write(&signature_path(&file))
            .unwrap();
        file
    }

    #[test]
    fn public_keys_round_trip_and_bad_ones_say_what_is_expected() {
        let public = key().public_key();
        assert_eq!(public.to_string().parse::<PublicKey>(), Ok(public));
        for bad in ["", "ed25519:", "rsa:AAAA", "ed25519:!!!", "ed25519:AAAA"] {
            let err = bad.parse::<PublicKey>().unwrap_err();
            assert!(err.contains("ed25519"), "{bad}: {err}");
        }
        // The identity point is a valid encoding but a weak key.
        let mut identity = [0u8; 32];
        identity[0] = 1;
        let err = format!("ed25519:{}", BASE64.encode(identity))
            .parse::<PublicKey>()
            .unwrap_err();
        assert!(err.contains("weak"), "{err}");
    }

    #[test]
    fn a_signature_holds_for_its_bytes_only_and_names_the_reason_otherwise() {
        let dir = tempfile::tempdir().unwrap();
        let team = key();
        let other = PrivateKey(ed25519_dalek::SigningKey::from_bytes(&[9; 32]));
        let trust = BTreeMap::from([
            ("team".to_string(), team.public_key()),
            ("ops".to_string(), other.public_key()),
        ]);
        let signers = Signers::new(vec!["team".into()], trust.clone());
        let file = signed(dir.path(), &team, b"component bytes");
        let verified = signers.verify(&file, b"component bytes").unwrap();
        assert_eq!(verified.signer, "team");

        let err = signers.verify(&file, b"component bytez").unwrap_err();
        assert!(matches!(err, SignatureError::Mismatch(_)), "{err}");

        // A signature file whose digest was edited to the new bytes: the signature fails.
        let mut forged = SignatureFile::read(&signature_path(&file)).unwrap();
        forged.sha256 = hex::encode(Sha256::digest(b"component bytez"));
        forged.write(&signature_path(&file)).unwrap();
        let err = signers.verify(&file, b"component bytez").unwrap_err();
        assert!(
            err.to_string().contains("does not match the bytes"),
            "{err}"
        );

        let file = signed(dir.path(), &other, b"component bytes");
        let err = signers.verify(&file, b"component bytes").unwrap_err();
        assert_eq!(err.to_string(), "signed by key `ops`, not one of [team]");

        let stranger = PrivateKey(ed25519_dalek::SigningKey::from_bytes(&[11; 32]));
        let file = signed(dir.path(), &stranger, b"component bytes");
        let err = signers.verify(&file, b"component bytes").unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "signed by untrusted key {} (calling itself `team`), not one of [team]",
                stranger.public_key()
            ),
            "the name in the file is only a hint"
        );

        std::fs::remove_file(signature_path(&file)).unwrap();
        let err = signers.verify(&file, b"component bytes").unwrap_err();
        assert_eq!(err, SignatureError::Missing(signature_path(&file)));

        std::fs::write(signature_path(&file), "{\"format\": 1}").unwrap();
        let err = signers.verify(&file, b"component bytes").unwrap_err();
        assert!(matches!(err, SignatureError::Malformed { .. }), "{err}");
    }

    #[test]
    fn private_keys_are_pkcs8_pem_written_for_the_owner_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("team.key");
        let key = PrivateKey::generate().unwrap();
        key.write_new(&path).unwrap();
        let text = std::fs::read_to_string(&path).unwrap();
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"), "{text}");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(
            PrivateKey::read(&path).unwrap().public_key(),
            key.public_key()
        );
        assert!(
            key.write_new(&path).is_err(),
            "an existing key is never overwritten"
        );
        std::fs::write(&path, "not a key").unwrap();
        assert!(matches!(
            PrivateKey::read(&path),
            Err(SigningError::Key { .. })
        ));
    }
}
