//! `tierhost serve`: the HTTP API over a [`CascadeService`], plus the background work of a
//! service: reload on SIGHUP / file change / admin call, fallback-rate alert evaluation with
//! webhook delivery, and graceful shutdown (stop accepting, finish in-flight, flush the audit).
//!
//! A bad request gets a 4xx with a JSON `{"error": ...}`; a misbehaving tier or overload never
//! produces a 5xx: the cascade always answers.
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
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

use crate::alerts::AlertEvent;
use crate::request::Request;
use crate::service::CascadeService;

/// The OpenAPI document of this API (kept true by `tests/server.rs`).
pub const OPENAPI: &str = include_str!("../openapi.json");

/// Debounce for file-change reloads: editors and `cp` produce bursts of events.
const WATCH_DEBOUNCE: Duration = Duration::from_millis(300);

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
            plugin: t.config.plugin.clone(),
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
    let status = if report.outcome == "applied" {
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
        Err(e) => error(StatusCode::NOT_FOUND, e),
    }
}

/// Runs the service on `listener` until SIGTERM / Ctrl-C, then drains and flushes.
pub async fn serve(
    service: Arc<CascadeService>,
    listener: tokio::net::TcpListener,
) -> anyhow::Result<()> {
    let watch = service.current().config.server.watch;
    let background = vec![
        tokio::spawn(alert_loop(service.clone())),
        tokio::spawn(sighup_loop(service.clone())),
    ];
    // Keep the watcher alive for the lifetime of the server.
    let _watcher = if watch {
        Some(watch_files(service.clone())?)
    } else {
        None
    };
    tracing::info!(addr = %listener.local_addr()?, "tierhost serving");
    axum::serve(listener, router(service.clone()))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    for task in background {
        task.abort();
    }
    service.flush();
    tracing::info!("stopped: in-flight requests finished, audit log flushed");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! { _ = ctrl_c => {}, _ = term => {} }
    tracing::info!("shutdown requested: no new connections, finishing in-flight requests");
}

async fn sighup_loop(service: Arc<CascadeService>) {
    #[cfg(unix)]
    {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            service.reload("sighup").await;
        }
    }
    #[cfg(not(unix))]
    let _ = service;
}

async fn alert_loop(service: Arc<CascadeService>) {
    let webhook = service.alerts().config().webhook.clone();
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tick.tick().await;
        for event in service.evaluate_alerts() {
            if let Some(url) = &webhook {
                tokio::spawn(post_webhook(url.clone(), event));
            }
        }
    }
}

async fn post_webhook(url: String, event: AlertEvent) {
    use http_body_util::Full;
    use hyper_util::client::legacy::Client;
    use hyper_util::rt::TokioExecutor;
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let body = match serde_json::to_vec(&event) {
        Ok(b) => b,
        Err(_) => return,
    };
    let request = match hyper::Request::post(&url)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(body)))
    {
        Ok(r) => r,
        Err(e) => {
            tracing::error!(%url, error = %e, "bad alert webhook URL");
            return;
        }
    };
    match tokio::time::timeout(Duration::from_secs(5), client.request(request)).await {
        Ok(Ok(response)) if response.status().is_success() => {}
        Ok(Ok(response)) => {
            tracing::error!(%url, status = %response.status(), "alert webhook refused the event")
        }
        Ok(Err(e)) => tracing::error!(%url, error = %e, "alert webhook failed"),
        Err(_) => tracing::error!(%url, "alert webhook timed out after 5 s"),
    }
}

/// Paths whose change triggers a reload: the config and every tier's `.wasm` file.
fn watched_files(service: &CascadeService) -> BTreeSet<PathBuf> {
    let loaded = service.current();
    let mut files = BTreeSet::new();
    files.insert(absolute(service.config_path()));
    for tier in &loaded.config.tiers {
        if !tier.plugin.starts_with("builtin:") {
            files.insert(absolute(&loaded.config.resolve(Path::new(&tier.plugin))));
        }
    }
    files
}

fn absolute(path: &Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

/// Watches the directories holding the config and plugins (editors and deploy tools replace
/// files by rename, which a watch on the file itself would miss) and reloads on changes to
/// the files of interest, debounced.
fn watch_files(service: Arc<CascadeService>) -> anyhow::Result<notify::RecommendedWatcher> {
    use notify::{RecursiveMode, Watcher};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Vec<PathBuf>>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        if let Ok(event) = event
            && !matches!(event.kind, notify::EventKind::Access(_))
        {
            let _ = tx.send(event.paths);
        }
    })?;
    let dirs: BTreeSet<PathBuf> = watched_files(&service)
        .iter()
        .filter_map(|f| f.parent().map(Path::to_path_buf))
        .collect();
    for dir in &dirs {
        watcher.watch(dir, RecursiveMode::NonRecursive)?;
    }
    tokio::spawn(async move {
        while let Some(paths) = rx.recv().await {
            let files = watched_files(&service);
            if !paths.iter().any(|p| files.contains(&absolute(p))) {
                continue;
            }
            // Let the burst of events of one change settle, then reload once.
            tokio::time::sleep(WATCH_DEBOUNCE).await;
            while rx.try_recv().is_ok() {}
            service.reload("file-change").await;
        }
    });
    Ok(watcher)
}
