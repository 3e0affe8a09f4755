//! Typed errors of the library. Faults of a tier during a call are not errors: they are
//! [`FallbackReason`](crate::reason::FallbackReason)s recorded in the trail.
use std::path::PathBuf;

/// A request that cannot be decoded or validated. Maps to HTTP 400 / a CLI error.
#[derive(Debug, thiserror::Error)]
pub enum RequestError {
    /// Not valid JSON, or not the request shape.
    #[error(
        "request is not valid JSON of the form {{\"id\": \"...\", \"features\": {{...}}}}: {0}"
    )]
    Json(String),
    /// A feature has a value the host does not accept.
    #[error("feature `{name}`: {problem}")]
    Feature {
        /// Feature name.
        name: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The request as a whole is invalid.
    #[error("invalid request: {0}")]
    Invalid(String),
}

/// A cascade configuration that cannot be read or is invalid.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// Config file.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// Not valid TOML, unknown field or wrong type (the message names the key and line).
    #[error("{path}: {message}")]
    Parse {
        /// Config file.
        path: PathBuf,
        /// The parser's message, with line and column.
        message: String,
    },
    /// A field has an invalid value.
    #[error("{path}: {field}: {problem}")]
    Invalid {
        /// Config file.
        path: PathBuf,
        /// Dotted field path, e.g. `tier "primary" (tier[0]).limits.deadline_ms`.
        field: String,
        /// What is wrong.
        problem: String,
    },
    /// A tier's plugin did not load (from a strict load: [`crate::Cascade::load_strict`]).
    #[error("{path}: tier \"{tier}\".plugin: {error}")]
    TierLoad {
        /// Config file.
        path: PathBuf,
        /// The tier.
        tier: String,
        /// Why it did not load.
        error: LoadError,
    },
}

/// A plugin that cannot be turned into a runnable tier.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoadError {
    /// The `.wasm` file cannot be read.
    #[error("cannot read plugin {path}: {message}")]
    Read {
        /// Plugin file.
        path: PathBuf,
        /// I/O error.
        message: String,
    },
    /// An `oci://` plugin could not be pulled or failed its digest check.
    #[error("cannot pull plugin {reference}: {message}")]
    Pull {
        /// The reference.
        reference: String,
        /// What went wrong.
        message: String,
    },
    /// `builtin:<name>` names no embedded tier.
    #[error("unknown builtin plugin `{0}` (known: {known})", known = crate::builtin::names().collect::<Vec<_>>().join(", "))]
    UnknownBuiltin(String),
    /// Not a valid WebAssembly component (corrupt file, core module, ...).
    #[error("not a valid WebAssembly component: {0}")]
    Compile(String),
    /// A component that does not implement the `tierhost:tier/tier` world or imports
    /// something the host does not provide.
    #[error("component does not implement the tierhost:tier world: {0}")]
    WrongWorld(String),
    /// The component imports a capability the tier is not granted (outbound HTTP without
    /// `[tier.http]`).
    #[error("capability not granted: {0}")]
    NotGranted(String),
    /// The component loaded but `describe` failed or returned nonsense.
    #[error("describe() failed: {0}")]
    Describe(String),
    /// The tier's `model` file cannot be read or is too large.
    #[error("model {path}: {message}")]
    Model {
        /// Model file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The tier's out-of-distribution guard cannot be set up.
    #[error("ood guard: {0}")]
    Ood(String),
    /// The compiled-artifact cache failed.
    #[error("compile cache: {0}")]
    Cache(String),
    /// The plugin file is larger than `engine.max_plugin_mib`.
    #[error("plugin is {bytes} bytes, the limit is engine.max_plugin_mib = {limit_mib} MiB")]
    TooLarge {
        /// Its size.
        bytes: u64,
        /// The limit.
        limit_mib: u64,
    },
    /// Compiling the plugin ran past `engine.compile_timeout_s` or
    /// `engine.compile_max_memory_mib`; it was stopped and refused.
    #[error("compilation stopped: {0}")]
    CompileLimit(String),
    /// The tier has `signed_by` and this file (its plugin or its model) is not signed by one
    /// of those keys: refused before it is compiled or granted.
    #[error("{path} refused: {error}")]
    Signature {
        /// The plugin or model file.
        path: PathBuf,
        /// Why its signature does not hold (boxed: a load error stays small).
        error: Box<SignatureError>,
    },
}

/// Why a file's detached signature (`<file>.sig`) does not vouch for its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    /// There is no `<file>.sig` beside the file.
    #[error("no signature file {0}")]
    Missing(PathBuf),
    /// The signature file cannot be read.
    #[error("cannot read signature file {path}: {message}")]
    Unreadable {
        /// The signature file.
        path: PathBuf,
        /// The I/O error.
        message: String,
    },
    /// The signature file is not a tierhost signature (bad JSON, unknown format or algorithm,
    /// a key or signature of the wrong length).
    #[error("signature file {path} is not a tierhost signature: {problem}")]
    Malformed {
        /// The signature file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// Signed by a key that is not in `[trust]` at all.
    #[error(
        "signed by untrusted key {key} (calling itself `{signer}`), not one of [{accepted}]",
        accepted = .accepted.join(", ")
    )]
    UnknownKey {
        /// The signer's name as the signature file gives it (unverified).
        signer: String,
        /// The public key the signature file names.
        key: String,
        /// The keys the tier accepts (`signed_by`).
        accepted: Vec<String>,
    },
    /// Signed by a key of `[trust]` that this tier does not accept.
    #[error("signed by key `{signer}`, not one of [{accepted}]", accepted = .accepted.join(", "))]
    NotAccepted {
        /// The name of the signing key in `[trust]`.
        signer: String,
        /// The keys the tier accepts (`signed_by`).
        accepted: Vec<String>,
    },
    /// The signature does not hold for these bytes: the file changed after it was signed
    /// (or the signature was forged).
    #[error("signature does not match the bytes: {0}")]
    Mismatch(String),
    /// The tier's plugin is not a file (`builtin:` or bytes in code), so it cannot carry a
    /// detached signature.
    #[error("signed_by needs a plugin file with a .sig beside it, not {0}")]
    NotAFile(String),
}

/// A key or signature file that `tierhost keygen` / `sign` cannot read or write.
#[derive(Debug, thiserror::Error)]
pub enum SigningError {
    /// The file cannot be read, written or created.
    #[error("{path}: {message}")]
    Io {
        /// The file.
        path: PathBuf,
        /// What went wrong.
        message: String,
    },
    /// The private key file is not an ed25519 key in PKCS#8 PEM.
    #[error(
        "{path}: not an ed25519 private key in PKCS#8 PEM (-----BEGIN PRIVATE KEY-----): {message}"
    )]
    Key {
        /// The key file.
        path: PathBuf,
        /// What the parser said.
        message: String,
    },
    /// The operating system gave no randomness for a new key.
    #[error("no randomness from the operating system for a new key: {0}")]
    Random(String),
}

/// Failure to set up the wasmtime engine.
#[derive(Debug, thiserror::Error)]
#[error("cannot create the wasm engine: {0}")]
pub struct EngineError(pub String);

/// A service that cannot start, or background work that cannot be set up.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    /// The config is unreadable or invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The wasm engine cannot be created.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The metrics registry refused a metric.
    #[error("metrics: {0}")]
    Metrics(String),
    /// The cascade loader thread cannot start or died.
    #[error("cascade loader: {0}")]
    Loader(String),
    /// Watching the config and plugin files for changes failed.
    #[error("file watch: {0}")]
    Watch(String),
    /// Listening or serving failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
    /// The TLS certificate or key cannot be used.
    #[error("TLS: {0}")]
    Tls(String),
}

/// A tier that faulted on a sample request of `[cascade] check_samples` (the reload gate).
#[derive(Debug, Clone, thiserror::Error)]
#[error("tier \"{tier}\" failed sample request `{request_id}`: {reason}")]
pub struct SampleFailure {
    /// The tier.
    pub tier: String,
    /// The sample request's id.
    pub request_id: String,
    /// How it failed.
    pub reason: crate::reason::FallbackReason,
}

/// An operator action on a tier that cannot be done.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TierActionError {
    /// No tier has that name.
    #[error("no tier named \"{0}\"")]
    NoSuchTier(String),
    /// The tier has no `[tier.breaker]` to force.
    #[error("tier \"{0}\" has no [tier.breaker] section")]
    NoBreaker(String),
}
