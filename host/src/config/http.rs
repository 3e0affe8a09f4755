//! `[tier.http]`: the outbound HTTP a remote-model tier is granted (everything else has none).
//!
//! An entry of `allow` is a URL prefix: scheme, host and port must match exactly (the port
//! defaults to the scheme's), and the request's path must equal the entry's path or continue
//! it after a `/`. `http://127.0.0.1:9000/v2/models/fraud` allows
//! `/v2/models/fraud/infer` and `/v2/models/fraud` on that host and port, not
//! `/v2/models/fraudulent` nor port 9001. Hosts are compared as written (lowercased): a name
//! is not resolved to compare it with an address.
use std::fmt;

use serde::{Deserialize, Serialize};

/// Default largest response body a remote tier may read per request.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Default most outgoing requests per tier call.
pub const DEFAULT_MAX_REQUESTS: u32 = 4;
/// Largest `max_response_bytes` accepted (the tier's memory limit bounds what it can keep).
pub const MAX_RESPONSE_BYTES_CEILING: u64 = 256 * 1024 * 1024;

/// `[tier.http]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpConfig {
    /// URL prefixes the tier may send requests to (`http://host:port/path`).
    pub allow: Vec<String>,
    /// Largest response body per request, in bytes; a longer one is cut and the call fails.
    #[serde(default = "default_max_response_bytes")]
    pub max_response_bytes: u64,
    /// Most outgoing requests per tier call; one more is refused like an unlisted URL.
    #[serde(default = "default_max_requests")]
    pub max_requests: u32,
}

fn default_max_response_bytes() -> u64 {
    DEFAULT_MAX_RESPONSE_BYTES
}

fn default_max_requests() -> u32 {
    DEFAULT_MAX_REQUESTS
}

impl HttpConfig {
    /// A grant of `allow` with the default limits.
    pub fn allow<I: IntoIterator<Item = S>, S: Into<String>>(urls: I) -> Self {
        Self {
            allow: urls.into_iter().map(Into::into).collect(),
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
            max_requests: DEFAULT_MAX_REQUESTS,
        }
    }

    /// Checks the section; the error is `(field, problem)`.
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        if self.allow.is_empty() {
            return Err((
                "allow",
                "must list at least one URL prefix (remove [tier.http] to grant no network)".into(),
            ));
        }
        for entry in &self.allow {
            AllowRule::parse(entry)
                .map_err(|problem| ("allow", format!("{entry:?}: {problem}")))?;
        }
        if self.max_response_bytes == 0 || self.max_response_bytes > MAX_RESPONSE_BYTES_CEILING {
            return Err((
                "max_response_bytes",
                format!("must be within 1..={MAX_RESPONSE_BYTES_CEILING}"),
            ));
        }
        if self.max_requests == 0 {
            return Err(("max_requests", "must be at least 1".into()));
        }
        Ok(())
    }

    /// The parsed allow list (entries that do not parse are skipped: `validate` refuses them).
    pub fn rules(&self) -> Vec<AllowRule> {
        self.allow
            .iter()
            .filter_map(|e| AllowRule::parse(e).ok())
            .collect()
    }
}

/// One parsed `allow` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowRule {
    scheme: String,
    host: String,
    port: u16,
    /// Without a trailing `/` (empty for the whole host).
    path: String,
}

impl AllowRule {
    /// Parses `scheme://host[:port][/path]`. Only `http` is accepted: the host's HTTP client
    /// has no TLS yet (see the README).
    pub fn parse(text: &str) -> Result<Self, String> {
        let (scheme, rest) = text.split_once("://").ok_or("must start with http://")?;
        let scheme = scheme.to_ascii_lowercase();
        let default_port = match scheme.as_str() {
            "http" => 80,
            "https" => {
                return Err(
                    "https is not supported yet: the host's HTTP client speaks plain \
                            HTTP only (reach the model server over a private network or a \
                            local TLS-terminating proxy)"
                        .into(),
                );
            }
            other => return Err(format!("scheme {other:?} is not http")),
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if path.contains(['?', '#']) {
            return Err("a query or fragment cannot be part of an allowed prefix".into());
        }
        if authority.contains('@') {
            return Err("user info is not allowed in a URL prefix".into());
        }
        let (host, port) = split_host_port(authority, default_port)?;
        Ok(Self {
            scheme,
            host,
            port,
            path: path.trim_end_matches('/').to_string(),
        })
    }

    /// Whether a request to `scheme://authority/path` falls under this rule.
    pub fn allows(&self, scheme: &str, authority: &str, path: &str) -> bool {
        let default_port = if scheme.eq_ignore_ascii_case("https") {
            443
        } else {
            80
        };
        let Ok((host, port)) = split_host_port(authority, default_port) else {
            return false;
        };
        if !scheme.eq_ignore_ascii_case(&self.scheme) || host != self.host || port != self.port {
            return false;
        }
        // Percent-encoded or dot segments could walk out of the prefix after the check:
        // they are never allowed.
        if path.contains('%') || path.split('/').any(|s| s == ".." || s == ".") {
            return false;
        }
        let path = path.split(['?', '#']).next().unwrap_or("");
        match path.strip_prefix(self.path.as_str()) {
            Some(rest) => rest.is_empty() || rest.starts_with('/') || self.path.is_empty(),
            None => false,
        }
    }
}

impl fmt::Display for AllowRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}://{}:{}{}",
            self.scheme, self.host, self.port, self.path
        )
    }
}

/// `host[:port]` (IPv6 in brackets), the host lowercased.
fn split_host_port(authority: &str, default_port: u16) -> Result<(String, u16), String> {
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (host, after) = rest.split_once(']').ok_or("unclosed [ in the host")?;
        let port = match after.strip_prefix(':') {
            Some(p) => Some(p),
            None if after.is_empty() => None,
            None => return Err(format!("unexpected {after:?} after the host")),
        };
        (format!("[{host}]"), port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host.to_string(), Some(port)),
            None => (authority.to_string(), None),
        }
    };
    if host.is_empty() || host == "[]" {
        return Err("the host is empty".into());
    }
    let port = match port {
        None => default_port,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("port {p:?} is not a number in 0..=65535"))?,
    };
    Ok((host.to_ascii_lowercase(), port))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(text: &str) -> AllowRule {
        AllowRule::parse(text).unwrap()
    }

    #[test]
    fn a_prefix_allows_its_path_and_below_on_the_same_origin_only() {
        let r = rule("http://127.0.0.1:9000/v2/models/fraud");
        assert!(r.allows("http", "127.0.0.1:9000", "/v2/models/fraud/infer"));
        assert!(r.allows("http", "127.0.0.1:9000", "/v2/models/fraud"));
        assert!(r.allows("HTTP", "127.0.0.1:9000", "/v2/models/fraud/infer?x=1"));
        assert!(!r.allows("http", "127.0.0.1:9000", "/v2/models/fraudulent/infer"));
        assert!(!r.allows("http", "127.0.0.1:9001", "/v2/models/fraud/infer"));
        assert!(!r.allows("http", "127.0.0.2:9000", "/v2/models/fraud/infer"));
        assert!(!r.allows("https", "127.0.0.1:9000", "/v2/models/fraud/infer"));
        assert!(!r.allows("http", "127.0.0.1:9000", "/v2/models/fraud/../other/infer"));
        assert!(!r.allows("http", "127.0.0.1:9000", "/v2/models/fraud/%2e%2e/other"));
        assert!(!r.allows("http", "user@127.0.0.1:9000", "/v2/models/fraud"));
    }

    #[test]
    fn default_ports_and_case_are_normalised() {
        let r = rule("http://Models.Internal/v2/");
        assert!(r.allows("http", "models.internal:80", "/v2/models/x/infer"));
        assert!(r.allows("http", "MODELS.internal", "/v2"));
        assert!(!r.allows("http", "models.internal:8080", "/v2"));
        let whole = rule("http://[::1]:9000");
        assert!(whole.allows("http", "[::1]:9000", "/anything"));
        assert_eq!(whole.to_string(), "http://[::1]:9000");
    }

    #[test]
    fn bad_entries_are_refused_with_the_reason() {
        for (entry, problem) in [
            ("127.0.0.1:9000/v2", "must start with http://"),
            ("https://models/v2", "https is not supported yet"),
            ("ftp://models/v2", "is not http"),
            ("http://:9000/v2", "host is empty"),
            ("http://models:99999/v2", "not a number"),
            ("http://models/v2?model=x", "query or fragment"),
            ("http://u:p@models/v2", "user info"),
        ] {
            let error = AllowRule::parse(entry).unwrap_err();
            assert!(error.contains(problem), "{entry}: {error}");
        }
        let empty = HttpConfig::allow(Vec::<String>::new());
        assert_eq!(empty.validate().unwrap_err().0, "allow");
        let mut zero = HttpConfig::allow(["http://127.0.0.1:1/x"]);
        zero.max_requests = 0;
        assert_eq!(zero.validate().unwrap_err().0, "max_requests");
    }
}
