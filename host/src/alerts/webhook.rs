//! Delivery of alert transitions to `[alerts] webhook` (cargo feature `webhooks`): a JSON POST
//! per event, in the background, bounded by [`WEBHOOK_TIMEOUT`]; failures are logged.
use std::time::Duration;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::header;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

use super::AlertEvent;

/// Longest wait for the webhook's response.
pub const WEBHOOK_TIMEOUT: Duration = Duration::from_secs(5);

/// POSTs `event` to `url` in the background.
pub fn deliver(url: String, event: AlertEvent) {
    tokio::spawn(post(url, event));
}

async fn post(url: String, event: AlertEvent) {
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
    match tokio::time::timeout(WEBHOOK_TIMEOUT, client.request(request)).await {
        Ok(Ok(response)) if response.status().is_success() => {}
        Ok(Ok(response)) => {
            tracing::error!(%url, status = %response.status(), "alert webhook refused the event")
        }
        Ok(Err(e)) => tracing::error!(%url, error = %e, "alert webhook failed"),
        Err(_) => tracing::error!(%url, "alert webhook timed out after 5 s"),
    }
}
