//! A client for the rollout endpoints of a running `tierhost serve`, for scripted rollouts
//! (`tierhost promote`, `tierhost rollback`, `tierhost shadow`): `POST
//! /admin/tiers/{name}/promote|rollback` and `GET /v1/tiers/{name}/shadow`, with the admin
//! bearer token when one is given. It speaks plain HTTP/1 (the admin listener,
//! `server.admin_listen`, is plain HTTP; it is meant for loopback or a private network) and
//! decides nothing itself: the server's answer, or its refusal with the server's message, is
//! what the caller gets.
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::header;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};

/// Longest wait for an answer: a promote loads and compiles the candidate and runs the
/// `check_samples` gate before it answers (a large ONNX tier compiles in ~25 s on 2 cores).
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(120);

/// Why a call to the server did not give an answer.
#[derive(Debug, thiserror::Error)]
pub enum AdminClientError {
    /// The URL is not one this client can call.
    #[error("{url}: {problem}")]
    Url {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        problem: String,
    },
    /// The server could not be reached, or the connection broke.
    #[error("{url}: {error}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// The connection error.
        error: String,
    },
    /// No answer within [`ADMIN_TIMEOUT`].
    #[error("{url}: no answer within {} s", ADMIN_TIMEOUT.as_secs())]
    Timeout {
        /// The URL called.
        url: String,
    },
    /// The server answered with an error status: its message (for a promotion the gate
    /// refuses, with the numbers) and the whole answer (`shadow`: the report it decided on).
    #[error("{message} (HTTP {status})")]
    Refused {
        /// HTTP status (401 no token, 403 wrong token, 404 no such tier or shadow, 409 refused
        /// by the gate or nothing to roll back, 422 the candidate did not load or check).
        status: u16,
        /// The server's `error` message.
        message: String,
        /// The server's answer.
        body: Value,
    },
    /// A success status without a JSON document.
    #[error("{url}: HTTP {status} without a JSON answer: {body}")]
    NotJson {
        /// The URL called.
        url: String,
        /// HTTP status.
        status: u16,
        /// The start of what it sent.
        body: String,
    },
}

/// A server's rollout endpoints.
#[derive(Clone)]
pub struct AdminClient {
    base: String,
    token: Option<String>,
    client: Client<HttpConnector, Full<Bytes>>,
}

impl AdminClient {
    /// A client for the server at `url` (`http://HOST:PORT`, a trailing `/` is ignored),
    /// without a token.
    pub fn new(url: &str) -> Result<Self, AdminClientError> {
        let base = url.trim_end_matches('/');
        let problem = |problem: &str| AdminClientError::Url {
            url: url.to_string(),
            problem: problem.to_string(),
        };
        let Some(authority) = base.strip_prefix("http://") else {
            return Err(problem(if base.starts_with("https://") {
                "https is not supported: use the admin listener's plain http:// address \
                 (server.admin_listen, on loopback or a private network)"
            } else {
                "expected http://HOST:PORT"
            }));
        };
        if authority.is_empty() || authority.contains('/') {
            return Err(problem("expected http://HOST:PORT (no path)"));
        }
        Ok(Self {
            base: base.to_string(),
            token: None,
            client: Client::builder(TokioExecutor::new()).build_http(),
        })
    }

    /// The same client sending `Authorization: Bearer <token>` (none when `token` is empty).
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token
            .map(|t| t.trim().to_string())
            .filter(|t| !t.is_empty());
        self
    }

    /// The same client with the token in `TIERHOST_ADMIN_TOKEN`, when it is set.
    pub fn with_env_token(self) -> Self {
        let token = std::env::var(crate::server::ADMIN_TOKEN_ENV).ok();
        self.with_token(token)
    }

    /// `POST /admin/tiers/{tier}/promote`: the server's rollout report (`action`, `tier`,
    /// `by`, `from` and `to` as `[version, sha256]`, `generation`).
    pub async fn promote(&self, tier: &str, by: Option<&str>) -> Result<Value, AdminClientError> {
        let path = format!("/admin/tiers/{}/promote", path_segment(tier));
        self.send("POST", &path, by.map(|by| json!({ "by": by })))
            .await
    }

    /// `POST /admin/tiers/{tier}/rollback`: the server's rollout report.
    pub async fn rollback(&self, tier: &str, by: Option<&str>) -> Result<Value, AdminClientError> {
        let path = format!("/admin/tiers/{}/rollback", path_segment(tier));
        self.send("POST", &path, by.map(|by| json!({ "by": by })))
            .await
    }

    /// `GET /v1/tiers/{tier}/shadow`: the shadow report (render it with
    /// [`crate::shadow::render`]).
    pub async fn shadow_report(&self, tier: &str) -> Result<Value, AdminClientError> {
        let path = format!("/v1/tiers/{}/shadow", path_segment(tier));
        self.send("GET", &path, None).await
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, AdminClientError> {
        let url = format!("{}{path}", self.base);
        let unreachable = |error: String| AdminClientError::Unreachable {
            url: url.clone(),
            error,
        };
        let mut request = hyper::Request::builder().method(method).uri(&url);
        if let Some(token) = &self.token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        let body = match body {
            Some(body) => {
                request = request.header(header::CONTENT_TYPE, "application/json");
                Bytes::from(body.to_string())
            }
            None => Bytes::new(),
        };
        let request = request
            .body(Full::new(body))
            .map_err(|e| unreachable(e.to_string()))?;
        let exchange = async {
            let response = self
                .client
                .request(request)
                .await
                .map_err(|e| unreachable(connection_error(&e)))?;
            let status = response.status();
            let bytes = response
                .into_body()
                .collect()
                .await
                .map_err(|e| unreachable(format!("reading the answer: {e}")))?
                .to_bytes();
            Ok::<_, AdminClientError>((status, bytes))
        };
        let (status, bytes) = tokio::time::timeout(ADMIN_TIMEOUT, exchange)
            .await
            .map_err(|_| AdminClientError::Timeout { url: url.clone() })??;
        let parsed = serde_json::from_slice::<Value>(&bytes);
        if status.is_success() {
            return parsed.map_err(|_| AdminClientError::NotJson {
                url,
                status: status.as_u16(),
                body: String::from_utf8_lossy(&bytes).chars().take(200).collect(),
            });
        }
        let body = parsed.unwrap_or(Value::Null);
        let message = match body["error"].as_str() {
            Some(message) => message.to_string(),
            None if status == hyper::StatusCode::NOT_FOUND => format!(
                "{method} {url}: no such route on this listener (promote and rollback are on \
                 the admin listener, the shadow report on the public one)"
            ),
            None => format!(
                "{method} {url}: {status}: {}",
                String::from_utf8_lossy(&bytes)
                    .chars()
                    .take(200)
                    .collect::<String>()
            ),
        };
        Err(AdminClientError::Refused {
            status: status.as_u16(),
            message,
            body,
        })
    }
}

/// The connection error with its causes (hyper's own message is only "client error
/// (Connect)").
fn connection_error(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// `name` as one URL path segment (everything but unreserved characters percent-encoded).
fn path_segment(name: &str) -> String {
    name.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// One line for a rollout report: `promoted tier "rules": 0.1.0 (sha256 0123456789ab) -> 0.2.0
/// (sha256 ba9876543210), generation 2, by ana`.
pub fn rollout_line(report: &Value) -> String {
    let version = |v: &Value| {
        let sha = v[1].as_str().unwrap_or("-");
        format!(
            "{} (sha256 {})",
            v[0].as_str().unwrap_or("-"),
            sha.get(..12).unwrap_or(sha)
        )
    };
    let action = match report["action"].as_str() {
        Some("promote") => "promoted",
        Some("rollback") => "rolled back",
        _ => "changed",
    };
    format!(
        "{action} tier \"{}\": {} -> {}, generation {}, by {}",
        report["tier"].as_str().unwrap_or("-"),
        version(&report["from"]),
        version(&report["to"]),
        report["generation"],
        report["by"].as_str().unwrap_or("-")
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tier_names_are_one_path_segment() {
        assert_eq!(path_segment("small-model_2.x"), "small-model_2.x");
        assert_eq!(path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn only_plain_http_base_urls_are_accepted() {
        assert!(AdminClient::new("http://127.0.0.1:8080/").is_ok());
        for bad in [
            "https://h:1",
            "127.0.0.1:8080",
            "http://",
            "http://h:1/admin",
        ] {
            assert!(AdminClient::new(bad).is_err(), "{bad}");
        }
    }
}
