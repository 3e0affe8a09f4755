//! Remote-model tier: asks a model server that speaks the KServe V2 (Open Inference Protocol)
//! JSON API, e.g. KServe, Triton, Seldon MLServer, and maps its output to an answer.
//!
//! The host must grant the tier the server's URL (`[tier.http] allow = [...]`); anything else
//! it tries to reach is refused by the host. The call's deadline bounds the whole round trip.
//!
//! Params:
//!
//! | param | default | meaning |
//! |---|---|---|
//! | `url` | (required) | the infer endpoint, `http://host:port/v2/models/<model>/infer` |
//! | `features` | (required) | comma-separated feature names, in the model's input order (numbers; booleans are 1/0) |
//! | `input` | `input` | name of the input tensor (shape `[1, n]`) |
//! | `datatype` | `FP64` | its datatype (`FP32`, `FP64`, ...) |
//! | `output` | the first | name of the output tensor to read |
//! | `labels` | | comma-separated class labels: the output holds one probability per class, the answer is the most probable |
//! | `positive_label` / `negative_label` / `threshold` | `block` / `allow` / `0.5` | without `labels`: the output is one probability of the positive class |
//! | `max_response_bytes` | 1048576 | longest response body the tier reads |
//!
//! Faults become tier errors naming them (connection refused, HTTP status with the start of
//! the body, a body that is not KServe V2 JSON, a missing output); an impossible value (a
//! probability outside [0, 1]) is passed on for the host's contract check to refuse.
use serde::Deserialize;
use tierhost_sdk::{
    Features, Outcome, Params, Prediction, Request, Tier, TierError, binary_prediction,
};
use wasi::http::outgoing_handler;
use wasi::http::types::{
    ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme,
};
use wasi::io::streams::StreamError;

/// Bytes written to the request body per `blocking-write-and-flush` (the WASI maximum).
const WRITE_CHUNK: usize = 4096;
/// Bytes of an error response quoted in the tier error.
const QUOTED_BODY: usize = 200;

struct KServe;

#[derive(Deserialize)]
struct InferResponse {
    outputs: Vec<Output>,
}

#[derive(Deserialize)]
struct Output {
    name: String,
    data: Vec<f64>,
}

impl Tier for KServe {
    fn predict(req: Request) -> Result<Outcome, TierError> {
        let params = Params::load();
        let url = params.text_or("url", "")?;
        if url.is_empty() {
            return Err(TierError::BadParams("`url` is required".into()));
        }
        let names = comma_list(&params, "features")?;
        if names.is_empty() {
            return Err(TierError::BadParams(
                "`features` must list the model's inputs".into(),
            ));
        }
        let features = Features::new(&req);
        let mut data = Vec::with_capacity(names.len());
        for name in &names {
            let value = match features.number(name)? {
                Some(x) => x,
                None => match features.flag(name)? {
                    Some(b) => f64::from(u8::from(b)),
                    None => return Err(TierError::MissingFeature((*name).to_string())),
                },
            };
            data.push(value);
        }
        let body = serde_json::json!({
            "id": req.id,
            "inputs": [{
                "name": params.text_or("input", "input")?,
                "shape": [1, data.len()],
                "datatype": params.text_or("datatype", "FP64")?,
                "data": data,
            }],
        });
        let max_bytes = params.integer_or("max_response_bytes", 1024 * 1024)?;
        let max_bytes = usize::try_from(max_bytes)
            .map_err(|_| TierError::BadParams("`max_response_bytes` must be positive".into()))?;
        let (status, response) = post_json(url, &body.to_string(), max_bytes)?;
        if !(200..300).contains(&status) {
            let quoted =
                String::from_utf8_lossy(&response[..response.len().min(QUOTED_BODY)]).into_owned();
            return Err(TierError::Internal(format!(
                "model server answered HTTP {status}: {quoted}"
            )));
        }
        let parsed: InferResponse = serde_json::from_slice(&response).map_err(|e| {
            TierError::Internal(format!("model server response is not KServe V2 JSON: {e}"))
        })?;
        let wanted = params.text_or("output", "")?;
        let output = match wanted {
            "" => parsed.outputs.first(),
            name => parsed.outputs.iter().find(|o| o.name == name),
        }
        .ok_or_else(|| {
            TierError::Internal(format!(
                "model server response has no output {wanted:?} (outputs: {})",
                parsed
                    .outputs
                    .iter()
                    .map(|o| o.name.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })?;
        let model_reason = format!("model server {}", output.name);
        let labels = comma_list(&params, "labels")?;
        let prediction = if labels.is_empty() {
            let [p] = output.data[..] else {
                return Err(TierError::Internal(format!(
                    "output {} has {} values; without `labels` one probability is expected",
                    output.name,
                    output.data.len()
                )));
            };
            binary_prediction(
                p,
                params.number_or("threshold", 0.5)?,
                params.text_or("positive_label", "block")?,
                params.text_or("negative_label", "allow")?,
                vec![model_reason],
            )
        } else {
            if output.data.len() != labels.len() {
                return Err(TierError::Internal(format!(
                    "output {} has {} values for {} labels",
                    output.name,
                    output.data.len(),
                    labels.len()
                )));
            }
            let (best, p) = output
                .data
                .iter()
                .copied()
                .enumerate()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .unwrap_or((0, f64::NAN));
            Prediction::new(labels[best], p).reason(model_reason)
        };
        Ok(Outcome::answer(prediction))
    }
}

/// The non-empty, trimmed items of a comma-separated text param (none when it is unset).
fn comma_list<'a>(params: &'a Params, name: &str) -> Result<Vec<&'a str>, TierError> {
    Ok(params
        .text_or(name, "")?
        .split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect())
}

/// POSTs `body` as JSON to `url` and returns the status and at most `max_bytes` of the
/// response body (more is an error).
fn post_json(url: &str, body: &str, max_bytes: usize) -> Result<(u16, Vec<u8>), TierError> {
    let bad_url = || TierError::BadParams(format!("`url` {url:?} is not http://host[:port]/path"));
    let (scheme, rest) = url.split_once("://").ok_or_else(bad_url)?;
    let scheme = match scheme {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        _ => return Err(bad_url()),
    };
    let (authority, path) = rest.find('/').map_or((rest, "/"), |i| rest.split_at(i));
    let failed = |what: &str| TierError::Internal(format!("POST {url}: {what}"));

    let headers = Fields::from_list(&[
        ("content-type".to_string(), b"application/json".to_vec()),
        ("accept".to_string(), b"application/json".to_vec()),
        // A known length (not chunked): every V2 server reads it.
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .map_err(|e| failed(&format!("headers: {e:?}")))?;
    let request = OutgoingRequest::new(headers);
    let set = [
        request.set_method(&Method::Post),
        request.set_scheme(Some(&scheme)),
        request.set_authority(Some(authority)),
        request.set_path_with_query(Some(path)),
    ];
    if set.iter().any(Result::is_err) {
        return Err(bad_url());
    }
    // Hand the request over first, then stream the body: the host buffers little of it.
    let outgoing = request.body().map_err(|()| failed("no request body"))?;
    let future = outgoing_handler::handle(request, None)
        .map_err(|code| failed(&format!("refused: {}", error_code(&code))))?;
    // When the send fails (nobody listening, refused by the host), the body stream closes
    // under the writer: the response future then holds the reason, which says more than
    // "stream closed", so it is read before a write error is reported.
    let written = write_body(&outgoing, body);
    let finished = OutgoingBody::finish(outgoing, None);
    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(response))) => response,
        Some(Ok(Err(code))) => return Err(failed(&error_code(&code))),
        Some(Err(())) | None => return Err(failed("no response")),
    };
    written.map_err(|e| failed(&format!("writing the request: {e}")))?;
    finished.map_err(|code| failed(&format!("finishing the request: {}", error_code(&code))))?;
    let status = response.status();
    let incoming = response
        .consume()
        .map_err(|()| failed("no response body"))?;
    let bytes = read_body(&incoming, max_bytes).map_err(|e| failed(&e))?;
    drop(incoming);
    Ok((status, bytes))
}

fn write_body(outgoing: &OutgoingBody, body: &str) -> Result<(), String> {
    let stream = outgoing
        .write()
        .map_err(|()| "no body stream".to_string())?;
    for chunk in body.as_bytes().chunks(WRITE_CHUNK) {
        stream
            .blocking_write_and_flush(chunk)
            .map_err(stream_error)?;
    }
    Ok(())
}

fn read_body(body: &IncomingBody, max_bytes: usize) -> Result<Vec<u8>, String> {
    let stream = body.stream().map_err(|()| "no body stream".to_string())?;
    let mut bytes = Vec::new();
    loop {
        match stream.blocking_read(64 * 1024) {
            Ok(chunk) => {
                if bytes.len() + chunk.len() > max_bytes {
                    return Err(format!("response body longer than {max_bytes} bytes"));
                }
                bytes.extend_from_slice(&chunk);
            }
            Err(StreamError::Closed) => return Ok(bytes),
            Err(e) => return Err(format!("reading the response: {}", stream_error(e))),
        }
    }
}

fn stream_error(error: StreamError) -> String {
    match error {
        StreamError::Closed => "stream closed".into(),
        StreamError::LastOperationFailed(e) => match wasi::http::types::http_error_code(&e) {
            Some(code) => error_code(&code),
            None => e.to_debug_string(),
        },
    }
}

fn error_code(code: &ErrorCode) -> String {
    match code {
        ErrorCode::ConnectionRefused => "connection refused".into(),
        ErrorCode::HttpRequestDenied => "request denied by the host".into(),
        ErrorCode::HttpResponseBodySize(Some(n)) => {
            format!("response body over the host's limit ({n} bytes)")
        }
        ErrorCode::InternalError(Some(message)) => message.clone(),
        other => format!("{other:?}"),
    }
}

tierhost_sdk::export_tier!(KServe, kind = Model, name = "kserve");
