//! `tierhost serve`: the HTTP API over a [`CascadeService`] (the service's own background work,
//! reloads and alerts, runs beside it), and graceful shutdown (stop accepting, finish
//! in-flight, flush the audit).
//!
//! A bad request gets a 4xx with a JSON `{"error": ...}`; a misbehaving tier or overload never
//! produces a 5xx: the cascade always answers.
use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;
use sha2::Digest;

use crate::error::ServiceError;
use crate::request::Request;
use crate::service::{CascadeService, shutdown_signal};

/// The OpenAPI document of this API (kept true by `tests/server.rs`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// The review page (static HTML and JS; its data comes from `/v1/escalations`).
#[cfg(feature = "escalation")]
pub const REVIEW_PAGE: &str = include_str!("../assets/review.html");

/// The environment variable that holds the admin bearer token.
pub const ADMIN_TOKEN_ENV: &str = "TIERHOST_ADMIN_TOKEN";

/// Who may call the admin endpoints (`/admin/*`, `/v1/escalations*`).
#[derive(Clone, Default)]
pub struct AdminAuth {
    /// sha256 of each accepted bearer token; empty: no token is required.
    token_digests: Vec<[u8; 32]>,
}

impl AdminAuth {
    /// A token is required (`Authorization: Bearer <token>`).
    pub fn bearer(token: &str) -> Self {
        Self {
            token_digests: vec![sha2::Sha256::digest(token.as_bytes()).into()],
        }
    }

    /// No token is required (the server should listen on loopback only).
    pub fn open() -> Self {
        Self::default()
    }

    /// The token in [`ADMIN_TOKEN_ENV`] when it is set and not empty, else no token.
    pub fn from_env() -> Self {
        Self::from_config(&crate::config::ServerConfig::default())
    }

    /// The tokens `server.admin_token_sha256` and [`ADMIN_TOKEN_ENV`] name (either is
    /// accepted); no token is required when neither is set.
    pub fn from_config(server: &crate::config::ServerConfig) -> Self {
        let mut auth = Self::open();
        if let Some(digest) = server
            .admin_token_sha256
            .as_deref()
            .and_then(|hex_digest| hex::decode(hex_digest).ok())
            .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
        {
            auth.token_digests.push(digest);
        }
        if let Ok(token) = std::env::var(ADMIN_TOKEN_ENV)
            && !token.trim().is_empty()
        {
            auth.token_digests
                .push(sha2::Sha256::digest(token.trim().as_bytes()).into());
        }
        auth
    }

    /// Whether a token is required.
    pub fn required(&self) -> bool {
        !self.token_digests.is_empty()
    }

    /// `Ok` when the request may pass; else the status to answer: 401 without a bearer token,
    /// 403 with a wrong one.
    fn check(&self, headers: &axum::http::HeaderMap) -> Result<(), StatusCode> {
        if self.token_digests.is_empty() {
            return Ok(());
        }
        let given = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim)
            .ok_or(StatusCode::UNAUTHORIZED)?;
        // Digests are compared, so the comparison's timing says nothing about the token.
        let given: [u8; 32] = sha2::Sha256::digest(given.as_bytes()).into();
        if self.token_digests.contains(&given) {
            Ok(())
        } else {
            Err(StatusCode::FORBIDDEN)
        }
    }
}

async fn require_admin(
    State(auth): State<AdminAuth>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    match auth.check(request.headers()) {
        Ok(()) => next.run(request).await,
        Err(status) => {
            let problem = if status == StatusCode::UNAUTHORIZED {
                "no bearer token"
            } else {
                "the bearer token is wrong"
            };
            let mut response = error(
                status,
                format!(
                    "admin endpoint: {problem}; send `Authorization: Bearer <token>` (the token in {ADMIN_TOKEN_ENV})"
                ),
            );
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                header::HeaderValue::from_static("Bearer"),
            );
            response
        }
    }
}

/// Shared handler state.
#[derive(Clone)]
struct AppState {
    service: Arc<CascadeService>,
    max_batch: usize,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// The router, for embedding or tests, with the admin token of [`AdminAuth::from_config`].
pub fn router(service: Arc<CascadeService>) -> Router {
    let auth = AdminAuth::from_config(&service.current().config.server);
    router_with(service, auth)
}

/// The router with `auth` guarding the admin endpoints: public and admin routes together.
pub fn router_with(service: Arc<CascadeService>, auth: AdminAuth) -> Router {
    public_router(service.clone()).merge(admin_router(service, auth))
}

/// The public routes: predict, batch, tiers, shadow reports, health, metrics, OpenAPI.
pub fn public_router(service: Arc<CascadeService>) -> Router {
    let router = Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/predict/batch", post(predict_batch))
        .route("/v1/tiers", get(tiers))
        .route("/v1/tiers/{name}/shadow", get(shadow_report))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        );
    with_state(router, service)
}

/// The admin routes (`/admin/*`, the review queue and its page), behind `auth`.
pub fn admin_router(service: Arc<CascadeService>, auth: AdminAuth) -> Router {
    let admin = Router::new()
        .route("/admin/reload", post(admin_reload))
        .route("/admin/tiers/{name}/breaker", post(admin_breaker))
        .route("/admin/tiers/{name}/promote", post(admin_promote))
        .route("/admin/tiers/{name}/rollback", post(admin_rollback));
    #[cfg(feature = "escalation")]
    let admin = admin
        .route("/v1/escalations", get(review::list))
        .route("/v1/escalations/{id}", get(review::show))
        .route("/v1/escalations/{id}/resolve", post(review::resolve));
    let admin = admin.route_layer(axum::middleware::from_fn_with_state(auth, require_admin));
    // The page holds no data (its API calls carry the token), so it is not behind the token.
    #[cfg(feature = "escalation")]
    let admin = admin.route("/review", get(review_page));
    with_state(admin, service)
}

fn with_state(router: Router<AppState>, service: Arc<CascadeService>) -> Router {
    let server = service.current().config.server.clone();
    router
        .layer(DefaultBodyLimit::max(server.max_body_bytes))
        .with_state(AppState {
            service,
            max_batch: server.max_batch,
        })
}

async fn predict(State(state): State<AppState>, body: Bytes) -> Response {
    let text = match std::str::from_utf8(&body) {
        Ok(t) => t,
        Err(_) => return error(StatusCode::BAD_REQUEST, "body is not UTF-8"),
    };
    match Request::from_json(text) {
        Ok(request) => axum::Json(state.service.predict(&request).await).into_response(),
        Err(e) => error(StatusCode::BAD_REQUEST, e.to_string()),
    }
}

async fn predict_batch(State(state): State<AppState>, body: Bytes) -> Response {
    /// The batch body; each request stays JSON text until it is decoded like a single one.
    #[derive(serde::Deserialize)]
    struct Batch<'a> {
        #[serde(borrow)]
        requests: Vec<&'a serde_json::value::RawValue>,
    }
    if let Err(e) = serde_json::from_slice::<serde::de::IgnoredAny>(&body) {
        return error(
            StatusCode::BAD_REQUEST,
            format!("body is not valid JSON: {e}"),
        );
    }
    let batch: Batch = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                "body must be {\"requests\": [request, ...]}",
            );
        }
    };
    let items = batch.requests;
    if items.len() > state.max_batch {
        return error(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!(
                "{} requests in the batch, the limit is {} (server.max_batch)",
                items.len(),
                state.max_batch
            ),
        );
    }
    let mut requests = Vec::with_capacity(items.len());
    for (i, item) in items.iter().enumerate() {
        match Request::from_json(item.get()) {
            Ok(r) => requests.push(r),
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("requests[{i}]: {e}")),
        }
    }
    let answers = state.service.predict_batch(&requests).await;
    axum::Json(json!({ "answers": answers })).into_response()
}

#[derive(Serialize)]
struct TierView {
    name: String,
    plugin: String,
    state: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    info: Option<crate::plugin::PluginInfo>,
    limits: crate::limits::TierLimits,
    min_confidence: f64,
    instances: crate::config::InstanceMode,
    max_concurrent: usize,
    in_flight: usize,
    alert_firing: bool,
    /// The tier's policies, in the order they run.
    policies: Vec<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    breaker: Option<crate::policy::breaker::BreakerView>,
    #[serde(skip_serializing_if = "Option::is_none")]
    hedge: Option<HedgeView>,
}

#[derive(Serialize)]
struct HedgeView {
    /// Calls since this tier version loaded.
    calls: u64,
    /// Hedges started.
    hedged: u64,
    /// The current hedge delay, in microseconds (absent while a quantile lacks samples).
    #[serde(skip_serializing_if = "Option::is_none")]
    after_us: Option<u64>,
}

async fn tiers(State(state): State<AppState>) -> Response {
    let loaded = state.service.current();
    let firing: BTreeSet<String> = state.service.alerts().firing().into_iter().collect();
    let tiers: Vec<TierView> = loaded
        .cascade
        .tiers()
        .iter()
        .map(|t| TierView {
            name: t.config.name.clone(),
            plugin: t.config.plugin.to_string(),
            state: if t.sandbox.is_ok() {
                "loaded"
            } else {
                "load-failed"
            },
            error: t.sandbox.as_ref().err().map(ToString::to_string),
            info: t.sandbox.as_ref().ok().map(|s| s.plugin().info().clone()),
            limits: t.config.limits.clone(),
            min_confidence: t.config.min_confidence,
            instances: t.config.instances,
            max_concurrent: t.config.max_concurrent,
            in_flight: t.in_flight(),
            alert_firing: firing.contains(&t.config.name),
            policies: t.policies.names(),
            breaker: t.policies.breaker.as_ref().map(|b| b.view()),
            hedge: t.policies.hedge.as_ref().map(|h| {
                let (calls, hedged) = h.counts();
                HedgeView {
                    calls,
                    hedged,
                    after_us: h.delay().map(|d| d.as_micros() as u64),
                }
            }),
        })
        .collect();
    axum::Json(json!({
        "cascade": loaded.cascade.name(),
        "generation": loaded.generation,
        "config_digest": loaded.cascade.config_digest(),
        "budget_ms": loaded.config.cascade.budget_ms,
        "tiers": tiers,
    }))
    .into_response()
}

async fn readyz(State(state): State<AppState>) -> Response {
    let loaded = state.service.current();
    let errors: Vec<String> = loaded
        .cascade
        .load_errors()
        .iter()
        .map(|(t, e)| format!("tier \"{t}\": {e}"))
        .collect();
    if errors.is_empty() {
        axum::Json(json!({ "status": "ready", "generation": loaded.generation })).into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(json!({ "status": "not-ready", "errors": errors })),
        )
            .into_response()
    }
}

async fn metrics(State(state): State<AppState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        state.service.render_metrics(),
    )
        .into_response()
}

async fn admin_reload(State(state): State<AppState>) -> Response {
    let report = state.service.reload("admin").await;
    let status = if report.outcome == crate::service::ReloadOutcome::Applied {
        StatusCode::OK
    } else {
        StatusCode::UNPROCESSABLE_ENTITY
    };
    (status, axum::Json(report)).into_response()
}

async fn admin_breaker(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Body {
        mode: crate::policy::breaker::BreakerMode,
    }
    let body: Body = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("body must be {{\"mode\": \"open\" | \"closed\" | \"automatic\"}}: {e}"),
            );
        }
    };
    match state.service.force_breaker(&name, body.mode) {
        Ok(s) => axum::Json(json!({ "tier": name, "state": s })).into_response(),
        Err(e) => error(StatusCode::NOT_FOUND, e.to_string()),
    }
}

/// The review page, with a content security policy that lets it run its own inline script and
/// talk to this server only (a request's text is shown as text; even if some were ever
/// rendered as HTML, it could load nothing and send nothing elsewhere).
#[cfg(feature = "escalation")]
async fn review_page() -> Response {
    (
        [
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                 connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; \
                 frame-ancestors 'none'",
            ),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            (header::REFERRER_POLICY, "no-referrer"),
        ],
        axum::response::Html(REVIEW_PAGE),
    )
        .into_response()
}

/// The review queue's endpoints (`/v1/escalations*`).
#[cfg(feature = "escalation")]
mod review {
    use super::*;
    use crate::escalation::{EscalationQueue, ResolveError, Status};
    use axum::extract::Query;

    /// The queue and the review labels of the cascade serving now.
    fn queue(state: &AppState) -> Option<(Arc<EscalationQueue>, Vec<String>)> {
        let live = state.service.current();
        let e = live.cascade.escalation()?;
        Some((e.queue().clone(), e.config().labels.clone()))
    }

    /// The 404 of a cascade without a queue.
    fn no_queue() -> Response {
        error(
            StatusCode::NOT_FOUND,
            "no escalation queue: add an [escalation] section (queue = \"...\") to the config",
        )
    }

    /// Runs a blocking queue call off the async workers.
    async fn blocking<T: Send + 'static>(
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, Response> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(|e| error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))
    }

    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    pub(super) struct ListQuery {
        #[serde(default)]
        status: Option<String>,
        #[serde(default)]
        limit: Option<usize>,
    }

    /// Most items one list call returns.
    const MAX_LIST: usize = 1000;

    pub(super) async fn list(
        State(state): State<AppState>,
        query: Result<Query<ListQuery>, axum::extract::rejection::QueryRejection>,
    ) -> Response {
        let Ok(Query(query)) = query else {
            return error(
                StatusCode::BAD_REQUEST,
                "query parameters are `status` and `limit`",
            );
        };
        let status = match query.status.as_deref().unwrap_or("pending") {
            "pending" => Some(Status::Pending),
            "resolved" => Some(Status::Resolved),
            "all" => None,
            other => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("status `{other}`: use pending, resolved or all"),
                );
            }
        };
        let limit = query.limit.unwrap_or(100).min(MAX_LIST);
        let Some((queue, labels)) = queue(&state) else {
            return no_queue();
        };
        let result = blocking(move || {
            let store = queue.store();
            Ok::<_, crate::escalation::QueueError>((store.list(status, limit)?, store.stats()?))
        })
        .await;
        /// The list as sent: items serialize through their own type, so features keep the
        /// caller's order (a `json!` value would sort them).
        #[derive(Serialize)]
        struct Listing<'a> {
            cascade: &'a str,
            labels: Vec<String>,
            pending: u64,
            oldest_pending_s: f64,
            items: Vec<crate::escalation::Escalation>,
        }
        match result {
            Ok(Ok((items, stats))) => axum::Json(Listing {
                cascade: state.service.current().cascade.name(),
                labels,
                pending: stats.pending,
                oldest_pending_s: stats.oldest_pending_s,
                items,
            })
            .into_response(),
            Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Err(response) => response,
        }
    }

    pub(super) async fn show(
        State(state): State<AppState>,
        UrlPath(id): UrlPath<String>,
    ) -> Response {
        let Some((queue, _)) = queue(&state) else {
            return no_queue();
        };
        let wanted = id.clone();
        match blocking(move || queue.store().get(&wanted)).await {
            Ok(Ok(Some(item))) => axum::Json(item).into_response(),
            Ok(Ok(None)) => error(StatusCode::NOT_FOUND, format!("no escalation `{id}`")),
            Ok(Err(e)) => error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
            Err(response) => response,
        }
    }

    pub(super) async fn resolve(
        State(state): State<AppState>,
        UrlPath(id): UrlPath<String>,
        body: Bytes,
    ) -> Response {
        #[derive(serde::Deserialize)]
        #[serde(deny_unknown_fields)]
        struct Body {
            label: String,
            #[serde(default)]
            note: Option<String>,
            #[serde(default)]
            by: Option<String>,
        }
        let body: Body = match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!(
                        "body must be {{\"label\": \"...\", \"note\"?: \"...\", \"by\"?: \"...\"}}: {e}"
                    ),
                );
            }
        };
        let Some((queue, labels)) = queue(&state) else {
            return no_queue();
        };
        let result = blocking(move || {
            queue.store().resolve(
                &id,
                &body.label,
                body.note.as_deref(),
                body.by.as_deref(),
                &labels,
            )
        })
        .await;
        match result {
            Ok(Ok(item)) => {
                tracing::info!(
                    target: "tierhost::escalation",
                    id = %item.id,
                    label = item.resolution.as_ref().map_or("", |r| r.label.as_str()),
                    by = item.resolution.as_ref().and_then(|r| r.by.as_deref()).unwrap_or(""),
                    "escalation resolved"
                );
                axum::Json(item).into_response()
            }
            Ok(Err(e @ ResolveError::NotFound(_))) => error(StatusCode::NOT_FOUND, e.to_string()),
            Ok(Err(e @ ResolveError::AlreadyResolved(_))) => {
                error(StatusCode::CONFLICT, e.to_string())
            }
            Ok(Err(e @ ResolveError::Invalid(_))) => error(StatusCode::BAD_REQUEST, e.to_string()),
            Ok(Err(e @ ResolveError::Store(_))) => {
                error(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
            }
            Err(response) => response,
        }
    }
}

fn rollout_error(e: crate::service::RolloutError) -> Response {
    use crate::service::RolloutError as E;
    match e {
        E::NoSuchTier(_) | E::NoShadow(_) => error(StatusCode::NOT_FOUND, e.to_string()),
        E::Gate { ref report, .. } => (
            StatusCode::CONFLICT,
            axum::Json(json!({ "error": e.to_string(), "shadow": report })),
        )
            .into_response(),
        E::Rejected { .. } => error(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
        E::NoRollback(_) => error(StatusCode::CONFLICT, e.to_string()),
    }
}

async fn shadow_report(State(state): State<AppState>, UrlPath(name): UrlPath<String>) -> Response {
    match state.service.shadow_report(&name) {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => rollout_error(e),
    }
}

/// Who asked for a promote or rollback: `{"by": "..."}` in the body (optional); `Err` is the
/// problem with the body.
fn requested_by(body: &Bytes) -> Result<String, String> {
    #[derive(serde::Deserialize, Default)]
    #[serde(deny_unknown_fields)]
    struct Body {
        #[serde(default)]
        by: Option<String>,
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok("unnamed operator".into());
    }
    match serde_json::from_slice::<Body>(body) {
        Ok(b) => Ok(b
            .by
            .map(|b| crate::guest::printable(b.chars().take(128).collect()))
            .filter(|b| !b.trim().is_empty())
            .unwrap_or_else(|| "unnamed operator".into())),
        Err(e) => Err(format!("body must be empty or {{\"by\": \"who\"}}: {e}")),
    }
}

async fn admin_promote(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    let by = match requested_by(&body) {
        Ok(by) => by,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    match state.service.promote(&name, &by).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => rollout_error(e),
    }
}

async fn admin_rollback(
    State(state): State<AppState>,
    UrlPath(name): UrlPath<String>,
    body: Bytes,
) -> Response {
    let by = match requested_by(&body) {
        Ok(by) => by,
        Err(problem) => return error(StatusCode::BAD_REQUEST, problem),
    };
    match state.service.rollback(&name, &by).await {
        Ok(report) => axum::Json(report).into_response(),
        Err(e) => rollout_error(e),
    }
}

/// Runs the service on `listener` until SIGTERM / Ctrl-C, with its background work (reloads,
/// alerts), then drains in-flight requests and flushes the audit log. The admin token comes
/// from `server.admin_token_sha256` and [`ADMIN_TOKEN_ENV`].
pub async fn serve(
    service: Arc<CascadeService>,
    listener: tokio::net::TcpListener,
) -> Result<(), ServiceError> {
    let auth = AdminAuth::from_config(&service.current().config.server);
    serve_with(service, listener, auth).await
}

/// [`serve`] with `auth` guarding the admin endpoints.
pub async fn serve_with(
    service: Arc<CascadeService>,
    listener: tokio::net::TcpListener,
    auth: AdminAuth,
) -> Result<(), ServiceError> {
    serve_listeners(service, listener, None, auth).await
}

/// Serves the public routes on `public` and the admin routes on `admin` (both on `public`
/// when `admin` is `None`) until SIGTERM / Ctrl-C, then drains both.
pub async fn serve_listeners(
    service: Arc<CascadeService>,
    public: tokio::net::TcpListener,
    admin: Option<tokio::net::TcpListener>,
    auth: AdminAuth,
) -> Result<(), ServiceError> {
    let background = service.run_background()?;
    let public_addr = public.local_addr()?;
    let admin_addr = match &admin {
        Some(listener) => listener.local_addr()?,
        None => public_addr,
    };
    if !auth.required() && !admin_addr.ip().is_loopback() {
        tracing::warn!(
            addr = %admin_addr,
            "admin endpoints (/admin/*, /v1/escalations) are open to anyone who can reach this \
             address: set {ADMIN_TOKEN_ENV} or server.admin_token_sha256 to require a bearer token"
        );
    }
    tracing::info!(%public_addr, %admin_addr, admin_token = auth.required(), "tierhost serving");
    let (stop, stopping) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        let _ = stop.send(true);
    });
    let until_stopped = |mut stopping: tokio::sync::watch::Receiver<bool>| async move {
        let _ = stopping.wait_for(|stop| *stop).await;
    };
    let tls = {
        let live = service.current();
        live.config.server.tls.clone().map(|tls| TlsFiles {
            cert: live.config.resolve(&tls.cert),
            key: live.config.resolve(&tls.key),
            check: Duration::from_secs(tls.check_s),
        })
    };
    let (public_routes, admin) = match admin {
        None => (router_with(service.clone(), auth), None),
        Some(admin) => (
            public_router(service.clone()),
            Some((admin, admin_router(service.clone(), auth))),
        ),
    };
    let public = async {
        match tls {
            None => axum::serve(public, public_routes)
                .with_graceful_shutdown(until_stopped(stopping.clone()))
                .await
                .map_err(ServiceError::from),
            Some(files) => {
                serve_tls(
                    public,
                    public_routes,
                    files,
                    until_stopped(stopping.clone()),
                )
                .await
            }
        }
    };
    let admin = async {
        match admin {
            None => Ok(()),
            Some((listener, routes)) => axum::serve(listener, routes)
                .with_graceful_shutdown(until_stopped(stopping.clone()))
                .await
                .map_err(ServiceError::from),
        }
    };
    let (public, admin) = tokio::join!(public, admin);
    public?;
    admin?;
    drop(background);
    service.flush();
    tracing::info!("stopped: in-flight requests finished, audit log flushed");
    Ok(())
}

/// The certificate and key of `[server.tls]`, resolved, and how often they are checked.
struct TlsFiles {
    cert: std::path::PathBuf,
    key: std::path::PathBuf,
    check: Duration,
}

impl TlsFiles {
    /// What identifies the files' current contents (modification time and size of each).
    fn stamp(&self) -> Option<[(std::time::SystemTime, u64); 2]> {
        let of = |path: &std::path::Path| {
            let meta = std::fs::metadata(path).ok()?;
            Some((meta.modified().ok()?, meta.len()))
        };
        Some([of(&self.cert)?, of(&self.key)?])
    }
}

/// Serves `routes` over TLS on `listener` until `stop` resolves; re-reads the certificate and
/// key when their files change (a bad new pair is logged and the old one keeps serving).
async fn serve_tls(
    listener: tokio::net::TcpListener,
    routes: Router,
    files: TlsFiles,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(), ServiceError> {
    // rustls needs a process-wide crypto provider; ring's, unless the embedder installed one.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let tls_error = |e: std::io::Error| {
        ServiceError::Tls(format!(
            "{} / {}: {e}",
            files.cert.display(),
            files.key.display()
        ))
    };
    let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(&files.cert, &files.key)
        .await
        .map_err(tls_error)?;
    let handle = axum_server::Handle::new();
    let shutdown = handle.clone();
    tokio::spawn(async move {
        stop.await;
        shutdown.graceful_shutdown(None);
    });
    let reloaded = config.clone();
    let watcher = tokio::spawn(async move {
        let mut seen = files.stamp();
        let mut every = tokio::time::interval(files.check);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            every.tick().await;
            let now = files.stamp();
            if now.is_none() || now == seen {
                continue;
            }
            match reloaded.reload_from_pem_file(&files.cert, &files.key).await {
                Ok(()) => {
                    seen = now;
                    tracing::info!(cert = %files.cert.display(), "TLS certificate reloaded");
                }
                Err(error) => tracing::error!(
                    cert = %files.cert.display(),
                    %error,
                    "TLS certificate not reloaded; the previous one keeps serving"
                ),
            }
        }
    });
    let served = axum_server::from_tcp_rustls(listener.into_std()?, config)?
        .handle(handle)
        .serve(routes.into_make_service())
        .await;
    watcher.abort();
    Ok(served?)
}
