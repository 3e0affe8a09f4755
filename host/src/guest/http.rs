//! Outbound HTTP for remote-model tiers (`[tier.http]`): `wasi:http/outgoing-handler`, with
//! every request the tier sends checked by the host before anything leaves the process.
//!
//! A request is sent only when its scheme, host, port and path fall under one of the tier's
//! `allow` prefixes and the call has sent fewer than `max_requests`; otherwise the tier gets
//! `http-request-denied`, nothing is sent, and the call is failed with
//! [`FallbackReason::CapabilityDenied`](crate::reason::FallbackReason) whatever the tier does
//! next (a tier that probes outside its grant is stepped over, not trusted with a second try).
//! A response whose `content-length` or body passes `max_response_bytes` is cut with
//! `http-response-body-size`. Time is bounded by the call's deadline (a hung model server is a
//! `deadline` fallback). Tiers without `[tier.http]` are never sent anything: they are refused
//! at load when their component imports `wasi:http/outgoing-handler`, and every request is
//! denied should one be made.
//!
//! Requests go through one pooled HTTP/1 client per tier (keep-alive connections to the model
//! server), plain HTTP only.
use std::sync::Arc;

use http_body_util::{BodyExt, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use wasmtime_wasi_http::{
    Error as HttpError, RequestOptions, WasiBody, WasiHttpCtx, WasiHttpHooks,
};

use crate::config::{AllowRule, HttpConfig};

/// Idle keep-alive connections kept per model server.
const MAX_IDLE_PER_HOST: usize = 32;

/// What a tier may reach, shared by its calls: the allow list, the limits and the pooled client.
pub struct HttpGrant {
    rules: Vec<AllowRule>,
    max_response_bytes: u64,
    max_requests: u32,
    client: Client<HttpConnector, WasiBody>,
}

impl std::fmt::Debug for HttpGrant {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpGrant")
            .field("rules", &self.rules)
            .field("max_response_bytes", &self.max_response_bytes)
            .field("max_requests", &self.max_requests)
            .finish()
    }
}

impl HttpGrant {
    /// The grant of a validated `[tier.http]` section.
    pub fn new(config: &HttpConfig) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_nodelay(true);
        Self {
            rules: config.rules(),
            max_response_bytes: config.max_response_bytes,
            max_requests: config.max_requests,
            client: Client::builder(TokioExecutor::new())
                .pool_max_idle_per_host(MAX_IDLE_PER_HOST)
                .build(connector),
        }
    }
}

/// The per-store side of wasi:http: the context and the hooks that enforce the grant.
pub(super) struct HttpState {
    pub(super) ctx: WasiHttpCtx,
    pub(super) hooks: HttpHooks,
}

impl HttpState {
    pub(super) fn new(grant: Option<Arc<HttpGrant>>) -> Self {
        Self {
            ctx: WasiHttpCtx::new(),
            hooks: HttpHooks {
                grant,
                sent: 0,
                denied: None,
            },
        }
    }

    /// Forgets the previous call's counters (warm instances).
    pub(super) fn arm(&mut self) {
        self.hooks.sent = 0;
        self.hooks.denied = None;
    }

    /// What the host refused during this call, if anything.
    pub(super) fn take_denied(&mut self) -> Option<String> {
        self.hooks.denied.take()
    }
}

pub(super) struct HttpHooks {
    grant: Option<Arc<HttpGrant>>,
    sent: u32,
    /// The first refusal of this call.
    denied: Option<String>,
}

impl HttpHooks {
    /// The grant if `request` may be sent; why not otherwise.
    fn check(&mut self, request: &http::Request<WasiBody>) -> Result<Arc<HttpGrant>, String> {
        let uri = request.uri();
        let shown = super::printable(super::faults::truncate(uri.to_string(), 256));
        let Some(grant) = &self.grant else {
            return Err(format!(
                "HTTP request to {shown} refused: the tier has no [tier.http] grant"
            ));
        };
        let scheme = uri.scheme_str().unwrap_or("");
        let authority = uri.authority().map_or("", |a| a.as_str());
        if !grant
            .rules
            .iter()
            .any(|rule| rule.allows(scheme, authority, uri.path()))
        {
            return Err(format!(
                "HTTP request to {shown} refused: not under [tier.http] allow ({})",
                grant
                    .rules
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
        if self.sent >= grant.max_requests {
            return Err(format!(
                "HTTP request to {shown} refused: the call already sent [tier.http] \
                 max_requests = {}",
                grant.max_requests
            ));
        }
        self.sent += 1;
        Ok(grant.clone())
    }
}

type ResponseFuture = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), HttpError>> + Send>,
                ),
                HttpError,
            >,
        > + Send,
>;

impl WasiHttpHooks for HttpHooks {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), HttpError>> + Send>,
    ) -> ResponseFuture {
        let grant = match self.check(&request) {
            Ok(grant) => grant,
            Err(why) => {
                // The first refusal of a call is logged and fails it; a tier retrying in a loop
                // adds nothing more (no log flood).
                if self.denied.is_none() {
                    tracing::warn!(target: "tierhost::tier", "{why}");
                    self.denied = Some(why);
                }
                return Box::new(async { Err(HttpError::HttpRequestDenied) });
            }
        };
        Box::new(async move {
            let response = grant.client.request(request).await.map_err(client_error)?;
            let limit = grant.max_response_bytes;
            let declared = response
                .headers()
                .get(http::header::CONTENT_LENGTH)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse::<u64>().ok());
            if let Some(length) = declared.filter(|&n| n > limit) {
                return Err(HttpError::HttpResponseBodySize(Some(length)));
            }
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, usize::try_from(limit).unwrap_or(usize::MAX))
                .map_err(move |e| match e.downcast::<hyper::Error>() {
                    Ok(e) => HttpError::Hyper(*e),
                    Err(_) => HttpError::HttpResponseBodySize(Some(limit)),
                })
                .boxed_unsync();
            let done: Box<dyn Future<Output = Result<(), HttpError>> + Send> =
                Box::new(async { Ok(()) });
            Ok((http::Response::from_parts(parts, body), done))
        })
    }
}

/// The wasi:http error a client failure becomes (the tier sees it; its message reaches the
/// trail through the tier's own error).
fn client_error(error: hyper_util::client::legacy::Error) -> HttpError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(&error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return match io.kind() {
                std::io::ErrorKind::ConnectionRefused => HttpError::ConnectionRefused,
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe => {
                    HttpError::ConnectionTerminated
                }
                std::io::ErrorKind::TimedOut => HttpError::ConnectionTimeout,
                _ => HttpError::InternalError(Some(io.to_string())),
            };
        }
        source = e.source();
    }
    if error.is_connect() {
        return HttpError::DestinationUnavailable;
    }
    HttpError::InternalError(Some(error.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use hyper::body::Bytes;

    fn request(uri: &str) -> http::Request<WasiBody> {
        http::Request::post(uri)
            .body(
                Empty::<Bytes>::new()
                    .map_err(|never| match never {})
                    .boxed_unsync(),
            )
            .unwrap()
    }

    fn hooks(config: Option<HttpConfig>) -> HttpHooks {
        HttpState::new(config.map(|c| Arc::new(HttpGrant::new(&c)))).hooks
    }

    #[test]
    fn max_requests_is_tripped_per_call_and_reset_by_arm() {
        let mut config = HttpConfig::allow(["http://127.0.0.1:9000/v2/models/fraud"]);
        config.max_requests = 2;
        let mut state = HttpState::new(Some(Arc::new(HttpGrant::new(&config))));
        let url = "http://127.0.0.1:9000/v2/models/fraud/infer";
        assert!(state.hooks.check(&request(url)).is_ok());
        assert!(state.hooks.check(&request(url)).is_ok());
        let third = state.hooks.check(&request(url)).unwrap_err();
        assert!(third.contains("max_requests = 2"), "{third}");
        // The next call starts counting again.
        state.arm();
        assert!(state.hooks.check(&request(url)).is_ok());
    }

    #[test]
    fn no_grant_and_unlisted_urls_are_refused_with_the_url() {
        let error = hooks(None)
            .check(&request("http://127.0.0.1:9000/x"))
            .unwrap_err();
        assert!(error.contains("no [tier.http] grant"), "{error}");
        let mut granted = hooks(Some(HttpConfig::allow(["http://127.0.0.1:9000/v2"])));
        let error = granted
            .check(&request("http://127.0.0.1:9001/v2/x"))
            .unwrap_err();
        assert!(
            error.contains("http://127.0.0.1:9001/v2/x") && error.contains("not under"),
            "{error}"
        );
        // A refused request does not use up the call's allowance.
        assert_eq!(granted.sent, 0);
    }
}
