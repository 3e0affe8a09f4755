//! `tierhost serve`: the HTTP API over a [`CascadeService`] (the service's own background work,
//! reloads and alerts, runs beside it), and graceful shutdown (stop accepting, finish
//! in-flight, flush the audit).
//!
//! A bad request gets a 4xx with a JSON `{"error": ...}`; a misbehaving tier or overload never
//! produces a 5xx: the cascade always answers.
use std::collections::BTreeSet;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;
use serde_json::json;

use crate::error::ServiceError;
use crate::request::Request;
use crate::service::{CascadeService, shutdown_signal};

/// The OpenAPI document of this API (kept true by `tests/server.rs`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Shared handler state.
#[derive(Clone)]
struct AppState {
    service: Arc<CascadeService>,
    max_batch: usize,
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(json!({ "error": message.into() }))).into_response()
}

/// The router, for embedding or tests.
pub fn router(service: Arc<CascadeService>) -> Router {
    let server = service.current().config.server.clone();
    Router::new()
        .route("/v1/predict", post(predict))
        .route("/v1/predict/batch", post(predict_batch))
        .route("/v1/tiers", get(tiers))
        .route(
            "/healthz",
            get(|| async { axum::Json(json!({ "status": "ok" })) }),
        )
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route(
            "/openapi.json",
            get(|| async { ([(header::CONTENT_TYPE, "application/json")], OPENAPI) }),
        )
        .route("/admin/reload", post(admin_reload))
        .route("/admin/tiers/{name}/breaker", post(admin_breaker))
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
    let mut answers = Vec::with_capacity(requests.len());
    for request in &requests {
        answers.push(state.service.predict(request).await);
    }
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
        state.service.metrics().render(),
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

/// Runs the service on `listener` until SIGTERM / Ctrl-C, with its background work (reloads,
/// alerts), then drains in-flight requests and flushes the audit log.
pub async fn serve(
    service: Arc<CascadeService>,
    listener: tokio::net::TcpListener,
) -> Result<(), ServiceError> {
    let background = service.run_background()?;
    tracing::info!(addr = %listener.local_addr()?, "tierhost serving");
    axum::serve(listener, router(service.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    drop(background);
    service.flush();
    tracing::info!("stopped: in-flight requests finished, audit log flushed");
    Ok(())
}
