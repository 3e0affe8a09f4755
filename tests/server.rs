//! `tierhost serve` end to end over real HTTP on loopback: answers with every tier healthy and
//! with the primary faulting, clear 4xx for bad requests, Prometheus metrics that pass
//! promtool, the OpenAPI document matching the routes, hot swap under concurrent load, a
//! corrupt replacement rejected while the old version keeps answering, overload answered with
//! the safe default (never a 5xx), audit rotation and the fallback-rate alert webhook.
use crate::common;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use common::http::Http;
use common::{
    RULES_FILE_TIER, replace_atomically, request_json, variant_of, wait_for, write_config_dir,
};
use hyper::body::Bytes;
use serde_json::Value;
use tierhost::{CascadeService, FallbackReason};

/// `tierhost::server::serve` in this process on a loopback port, over a config written to a
/// temporary directory (with `rules.wasm` beside it); derefs to its HTTP client.
struct Server {
    http: Http,
    dir: tempfile::TempDir,
}

impl std::ops::Deref for Server {
    type Target = Http;
    fn deref(&self) -> &Http {
        &self.http
    }
}

impl Server {
    async fn start(config: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let path = write_config_dir(dir.path(), config);
        let service = CascadeService::start(&path).await.expect("service starts");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let http = Http::new(format!("http://{}", listener.local_addr().unwrap()));
        tokio::spawn(tierhost::server::serve(service, listener));
        Self { http, dir }
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }
}

fn chaos(name: &str, mode: &str, extra: &str) -> String {
    format!(
        "[[tier]]\nname = \"{name}\"\nplugin = \"builtin:chaos\"\n{extra}\n[tier.params]\nmode = \"{mode}\"\n"
    )
}

/// A server with `settings` (top-level sections), a primary chaos tier in `mode` (`extra`
/// lines in its table, `tables` after its params) and the rules tier after it.
async fn serve_primary(settings: &str, mode: &str, extra: &str, tables: &str) -> Server {
    let primary = chaos("primary", mode, extra);
    Server::start(&format!("{settings}{primary}{tables}{RULES_FILE_TIER}")).await
}

/// [`serve_primary`] with no settings or tables, and its answer to one request.
async fn with_primary(mode: &str, extra: &str) -> (Server, Value) {
    let server = serve_primary("", mode, extra, "").await;
    let (status, answer) = server.predict(&format!("{mode}-1")).await;
    assert_eq!(status, 200, "{answer}");
    (server, answer)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn predicts_with_healthy_and_faulting_primary() {
    let (_, answer) = with_primary("ok", "min_confidence = 0.5").await;
    assert_eq!(answer["served_by"]["tier"], "primary");
    assert_eq!(answer["degraded"], false);

    let (faulting, answer) = with_primary("panic", "").await;
    assert_eq!(answer["served_by"]["tier"], "rules");
    assert_eq!(answer["served_by"]["sha256"].as_str().unwrap().len(), 64);
    assert_eq!(answer["degraded"], true);
    assert_eq!(answer["trail"][0]["reason"]["kind"], "trap");
    assert!(
        answer["trail"][0]["message"]
            .as_str()
            .unwrap()
            .contains("deliberate panic")
    );

    let (status, body) = faulting
        .send(
            "POST",
            "/v1/predict/batch",
            format!(
                r#"{{"requests":[{},{}]}}"#,
                request_json("b1"),
                request_json("b2")
            ),
        )
        .await;
    assert_eq!(status, 200, "{body}");
    let batch: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(batch["answers"][1]["request_id"], "b2");
    assert_eq!(batch["answers"][1]["served_by"]["tier"], "rules");

    let (status, body) = faulting.get("/v1/tiers").await;
    assert_eq!(status, 200);
    let tiers: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(tiers["tiers"][0]["name"], "primary");
    assert_eq!(tiers["tiers"][0]["state"], "loaded");
    assert_eq!(tiers["tiers"][1]["info"]["name"], "fraud-rules");
    assert_eq!(tiers["tiers"][1]["limits"]["deadline_ms"], 10000);
    assert_eq!(faulting.get("/healthz").await.0, 200);
    assert_eq!(faulting.get("/readyz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_a_clear_4xx() {
    let server = Server::start(&format!(
        "[server]\nmax_body_bytes = 4096\nmax_batch = 2\n{RULES_FILE_TIER}"
    ))
    .await;
    let cases: [(&str, String, u16, &str); 6] = [
        ("/v1/predict", "{not json".into(), 400, "not valid JSON"),
        (
            "/v1/predict",
            r#"{"features":{"amount":{"nested":1}}}"#.into(),
            400,
            "feature `amount`",
        ),
        (
            "/v1/predict",
            r#"{"id":3,"features":{}}"#.into(),
            400,
            "invalid type",
        ),
        (
            "/v1/predict",
            format!(r#"{{"features":{{"x":"{}"}}}}"#, "a".repeat(8000)),
            413,
            "",
        ),
        (
            "/v1/predict/batch",
            format!(
                r#"{{"requests":[{},{{"features":[]}}]}}"#,
                request_json("ok")
            ),
            400,
            "requests[1]",
        ),
        (
            "/v1/predict/batch",
            format!(r#"{{"requests":[{0},{0},{0}]}}"#, r#"{"features":{}}"#),
            413,
            "server.max_batch",
        ),
    ];
    for (path, body, expected_status, expected_text) in cases {
        let (status, text) = server.send("POST", path, body).await;
        assert_eq!(status, expected_status, "{path}: {text}");
        assert!(
            text.contains(expected_text),
            "{path}: `{expected_text}` not in {text}"
        );
    }
    // Nothing above hurt the server.
    assert_eq!(server.predict("after").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_fallbacks_and_pass_promtool() {
    let server = serve_primary("", "infinite-loop", "", "").await;
    for i in 0..3 {
        server.predict(&format!("m{i}")).await;
    }
    let (status, text) = server.get("/metrics").await;
    assert_eq!(status, 200);
    assert!(
        text.contains(r#"tierhost_requests_total{served_by="rules"} 3"#),
        "{text}"
    );
    assert!(
        text.contains(r#"tierhost_fallbacks_total{from_tier="primary",reason="out-of-fuel"} 3"#),
        "{text}"
    );
    assert!(
        text.contains("tierhost_tier_call_duration_seconds_bucket{tier=\"primary\""),
        "{text}"
    );
    assert!(
        text.contains("tierhost_tier_info{plugin=\"fraud-rules\""),
        "{text}"
    );

    let promtool = std::process::Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    match promtool {
        Ok(mut child) => {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(text.as_bytes())
                .unwrap();
            let out = child.wait_with_output().unwrap();
            let report = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            assert!(
                out.status.success() && report.trim().is_empty(),
                "promtool check metrics: {report}"
            );
        }
        Err(_) if std::env::var_os("TIERHOST_REQUIRE_PROMTOOL").is_none() => {
            eprintln!(
                "promtool not installed: skipping its check (scripts/test.sh installs it and requires it)"
            );
        }
        Err(e) => {
            panic!("promtool is required (TIERHOST_REQUIRE_PROMTOOL is set) but cannot run: {e}")
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openapi_document_matches_the_routes_and_the_answers() {
    let server = Server::start(&format!(
        "[escalation]\nqueue = \"queue.db\"\ntiers = [\"rules\"]\n{RULES_FILE_TIER}"
    ))
    .await;
    let (status, text) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let doc: Value = serde_json::from_str(&text).unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let served = [
        ("post", "/v1/predict"),
        ("post", "/v1/predict/batch"),
        ("get", "/v1/tiers"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/openapi.json"),
        ("post", "/admin/reload"),
        ("post", "/admin/tiers/{name}/breaker"),
        ("get", "/v1/escalations"),
        ("get", "/v1/escalations/{id}"),
        ("post", "/v1/escalations/{id}/resolve"),
        ("get", "/review"),
        ("get", "/v1/tiers/{name}/shadow"),
        ("post", "/admin/tiers/{name}/promote"),
        ("post", "/admin/tiers/{name}/rollback"),
    ];
    assert_eq!(
        paths.len(),
        served.len(),
        "documented paths: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (method, path) in served {
        assert!(
            paths[path].get(method).is_some(),
            "{method} {path} is not documented"
        );
        let body = if path == "/v1/predict" {
            request_json("doc")
        } else {
            r#"{"requests":[]}"#.into()
        };
        let url = path.replace("{name}", "rules").replace("{id}", "unknown");
        let (status, text) = server.send(&method.to_uppercase(), &url, body).await;
        // A route that does not exist answers 404 with an empty body; a known route that
        // finds no such escalation says so in JSON.
        assert!(
            status != 405 && !(status == 404 && text.is_empty()),
            "{method} {path} is documented but answers {status}"
        );
    }
    // Every documented required field of an answer and a trail entry is in a real answer.
    let (_, answer) = server.predict("schema").await;
    for field in doc["components"]["schemas"]["Answer"]["required"]
        .as_array()
        .unwrap()
    {
        assert!(
            answer.get(field.as_str().unwrap()).is_some(),
            "answer lacks documented `{field}`"
        );
    }
    for field in doc["components"]["schemas"]["TrailEntry"]["required"]
        .as_array()
        .unwrap()
    {
        assert!(
            answer["trail"][0].get(field.as_str().unwrap()).is_some(),
            "trail entry lacks `{field}`"
        );
    }
    let kinds: Vec<&str> = doc["components"]["schemas"]["TrailEntry"]["properties"]["reason"]
        ["properties"]["kind"]["enum"]
        .as_array()
        .unwrap()
        .iter()
        .map(|k| k.as_str().unwrap())
        .collect();
    assert_eq!(
        kinds,
        FallbackReason::KINDS,
        "the documented reason kinds are every FallbackReason kind"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_swap_under_load_loses_no_request_and_rejects_a_corrupt_replacement() {
    let server = Arc::new(
        Server::start(&format!(
            "[cascade]\nbudget_ms = 10000\n[server]\nwatch = false\n{RULES_FILE_TIER}"
        ))
        .await,
    );
    let (_, first) = server.predict("before").await;
    let old_sha = first["served_by"]["sha256"].as_str().unwrap().to_string();

    // Four workers ask in a loop and count the answers of each plugin digest.
    let stop = Arc::new(AtomicBool::new(false));
    let by_sha = Arc::new(Mutex::new(BTreeMap::<String, usize>::new()));
    let mut workers = Vec::new();
    for w in 0..4 {
        let (server, stop, by_sha) = (server.clone(), stop.clone(), by_sha.clone());
        workers.push(tokio::spawn(async move {
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                let (status, answer) = server.predict(&format!("w{w}-{i}")).await;
                assert_eq!(status, 200, "request failed during a swap: {answer}");
                assert_eq!(answer["served_by"]["tier"], "rules", "{answer}");
                let sha = answer["served_by"]["sha256"].as_str().unwrap().to_string();
                *by_sha.lock().unwrap().entry(sha).or_default() += 1;
                i += 1;
            }
        }));
    }
    let answers_by = |sha: &str| by_sha.lock().unwrap().get(sha).copied().unwrap_or(0);
    let answers = || by_sha.lock().unwrap().values().sum::<usize>();
    wait_for(
        "the workers to be answered by the old version",
        async || (answers_by(&old_sha) >= 8).then_some(()),
    )
    .await;

    let rules = tierhost::builtin::get("rules").unwrap();
    replace_atomically(&server.path("rules.wasm"), &variant_of(rules, "v2"));
    let (status, report) = server.send("POST", "/admin/reload", Bytes::new()).await;
    assert_eq!(status, 200, "{report}");
    let report: Value = serde_json::from_str(&report).unwrap();
    let new_sha = report["tiers"][0][2].as_str().unwrap().to_string();
    assert_ne!(new_sha, old_sha);
    let tiers = server.get_json("/v1/tiers").await;
    assert_eq!(tiers["generation"], 2);
    assert_eq!(tiers["tiers"][0]["info"]["sha256"], new_sha.as_str());
    wait_for(
        "the workers to be answered by the new version",
        async || (answers_by(&new_sha) >= 8).then_some(()),
    )
    .await;

    // A corrupt replacement is rejected; the working version keeps answering.
    replace_atomically(&server.path("rules.wasm"), b"\0asm this is not a component");
    let (status, report) = server.send("POST", "/admin/reload", Bytes::new()).await;
    assert_eq!(status, 422, "{report}");
    assert!(
        report.contains("not a valid WebAssembly component"),
        "{report}"
    );
    let (before, new_before) = (answers(), answers_by(&new_sha));
    wait_for("more answers after the rejected reload", async || {
        (answers() >= before + 8).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.expect("no worker saw a failed request");
    }
    let by_sha = by_sha.lock().unwrap().clone();
    assert_eq!(
        by_sha.len(),
        2,
        "only the old and the new version answered: {by_sha:?}"
    );
    assert!(
        answers_by(&new_sha) >= new_before + 8,
        "after the rejected reload the new version kept answering: {by_sha:?}"
    );
    let (_, after) = server.predict("after").await;
    assert_eq!(
        after["served_by"]["sha256"],
        new_sha.as_str(),
        "the corrupt file replaced the working one"
    );
    assert_eq!(server.get_json("/v1/tiers").await["generation"], 2);
    assert_eq!(
        server
            .metric(r#"tierhost_reloads_total{outcome="applied"}"#)
            .await,
        1.0
    );
    assert_eq!(
        server
            .metric(r#"tierhost_reloads_total{outcome="rejected"}"#)
            .await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_plugin_file_is_picked_up_by_the_watcher() {
    let server = Server::start(RULES_FILE_TIER).await;
    let (_, first) = server.predict("w0").await;
    let old_sha = first["served_by"]["sha256"].as_str().unwrap().to_string();
    let new_version = variant_of(tierhost::builtin::get("rules").unwrap(), "watched");
    replace_atomically(&server.path("rules.wasm"), &new_version);
    let tiers = wait_for("the watcher to reload the changed plugin", async || {
        let tiers = server.get_json("/v1/tiers").await;
        (tiers["tiers"][0]["info"]["sha256"] != old_sha.as_str()).then_some(tiers)
    })
    .await;
    let new_sha = tiers["tiers"][0]["info"]["sha256"].as_str().unwrap();
    assert_ne!(new_sha, old_sha);
    let (_, answer) = server.predict("w1").await;
    assert_eq!(answer["served_by"]["sha256"], new_sha);
}

/// How long the held call below blocks its tier (a WASI sleep on the frozen clock, cut off at
/// its deadline): the time the test has to send the rest while the capacity is taken.
const HOLD: &str = "[tier.limits]\ndeadline_ms = 4000";

/// Sends one request that holds a sleeping tier, waits until `held` says it is in flight, then
/// sends `n` more at once. The held request runs into its deadline, the others are shed, and
/// `served_by` answers them all; returns the others.
async fn hold_then_send(
    server: &Arc<Server>,
    n: usize,
    served_by: &str,
    held: impl AsyncFn(&Server) -> bool,
) -> Vec<Value> {
    let holder = {
        let server = server.clone();
        tokio::spawn(async move { server.predict("held").await })
    };
    wait_for("the first request to hold the capacity", async || {
        held(server.as_ref()).await.then_some(())
    })
    .await;
    let mut tasks = Vec::new();
    for i in 0..n {
        let server = server.clone();
        tasks.push(tokio::spawn(async move {
            server.predict(&format!("o{i}")).await
        }));
    }
    let mut others = Vec::new();
    for task in tasks {
        let (status, answer) = task.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        others.push(answer);
    }
    let (status, held) = holder.await.unwrap();
    assert_eq!(status, 200, "{held}");
    assert_eq!(held["served_by"]["tier"], served_by, "{held}");
    assert_eq!(held["trail"][0]["reason"]["kind"], "deadline", "{held}");
    for answer in &others {
        assert_eq!(answer["served_by"]["tier"], served_by, "{answer}");
        assert_eq!(answer["trail"][0]["reason"]["kind"], "shed", "{answer}");
    }
    others
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_is_answered_by_the_safe_default_never_a_5xx() {
    // One request in the cascade at a time; the only tier blocks until its deadline.
    let config = format!(
        "[cascade]\nbudget_ms = 20000\n[server]\nmax_in_flight = 1\n{}",
        chaos("slow", "sleep", HOLD)
    );
    let server = Arc::new(Server::start(&config).await);
    let others = hold_then_send(&server, 8, "safe-default", async |s: &Server| {
        s.metric("tierhost_in_flight_requests").await == 1.0
    })
    .await;
    for answer in &others {
        assert!(
            answer["trail"][0]["message"]
                .as_str()
                .unwrap()
                .contains("host saturated")
        );
    }
    assert_eq!(server.metric("tierhost_shed_requests_total").await, 8.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tier_bulkhead_sheds_that_tier_only() {
    let config = format!(
        "[cascade]\nbudget_ms = 20000\n{}{RULES_FILE_TIER}",
        chaos("slow", "sleep", &format!("max_concurrent = 1\n{HOLD}"))
    );
    let server = Arc::new(Server::start(&config).await);
    hold_then_send(&server, 4, "rules", async |s: &Server| {
        s.get_json("/v1/tiers").await["tiers"][0]["in_flight"] == 1
    })
    .await;
    // Only the tier was shed, not the request: the host-wide counter stays at 0.
    assert_eq!(server.metric("tierhost_shed_requests_total").await, 0.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_log_rotates_by_size() {
    let audit = "[cascade]\naudit_log = \"audit.jsonl\"\naudit_max_bytes = 4096\naudit_keep = 2\n";
    let server = serve_primary(audit, "trap", "", "").await;
    for i in 0..40 {
        server.predict(&format!("a{i}")).await;
    }
    let current = std::fs::read_to_string(server.path("audit.jsonl")).unwrap();
    let rotated = std::fs::read_to_string(server.path("audit.jsonl.1")).unwrap();
    assert!(current.len() <= 4096 && rotated.len() <= 4096);
    assert!(server.path("audit.jsonl.2").exists());
    assert!(
        !server.path("audit.jsonl.3").exists(),
        "only audit_keep = 2 rotated files are kept"
    );
    let last: Value = serde_json::from_str(current.lines().last().unwrap()).unwrap();
    assert_eq!(last["request_id"], "a39");
    assert_eq!(last["reason"], "trap");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fallback_rate_alert_fires_and_posts_to_the_webhook() {
    // A webhook receiver on loopback.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<Value>();
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |axum::Json(event): axum::Json<Value>| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(event);
                "ok"
            }
        }),
    );
    let hook = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hook_url = format!("http://{}/hook", hook.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(hook, app).await });

    let config = format!(
        "[alerts]\nfallback_rate = 0.10\nwindow_s = 60\nmin_requests = 5\nfor_s = 0\nwebhook = \"{hook_url}\"\n{}{RULES_FILE_TIER}",
        "[[tier]]\nname = \"primary\"\nplugin = \"builtin:chaos\"\n[tier.params]\nmode = \"flaky\"\nfault_rate = 0.5\n"
    );
    let server = Server::start(&config).await;
    for i in 0..20 {
        server.predict(&format!("alert-{i}")).await;
    }
    let event = tokio::time::timeout(common::PATIENCE, rx.recv())
        .await
        .expect("webhook called")
        .unwrap();
    assert_eq!(event["tier"], "primary");
    assert_eq!(event["state"], "firing");
    assert!(event["rate"].as_f64().unwrap() > 0.10);
    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains(r#"tierhost_fallback_alert_firing{tier="primary"} 1"#),
        "{metrics}"
    );
    let (_, tiers) = server.get("/v1/tiers").await;
    assert!(tiers.contains(r#""alert_firing":true"#), "{tiers}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn breaker_is_visible_forcible_and_survives_a_swap_of_another_tier() {
    let server = serve_primary(
        "[cascade]\naudit_log = \"audit.jsonl\"\nbudget_ms = 10000\n[server]\nwatch = false\n",
        "trap",
        "",
        "[tier.breaker]\nwindow_calls = 4\nminimum_calls = 2\nopen_ms = 600000\n",
    )
    .await;
    for i in 0..2 {
        let (_, answer) = server.predict(&format!("trap-{i}")).await;
        assert_eq!(answer["trail"][0]["reason"]["kind"], "trap");
    }
    let (_, answer) = server.predict("skipped").await;
    assert_eq!(answer["trail"][0]["reason"]["kind"], "breaker-open");
    assert_eq!(answer["trail"][0]["step"], "skipped");
    assert_eq!(answer["served_by"]["tier"], "rules");

    let (_, metrics) = server.get("/metrics").await;
    assert!(
        metrics.contains("tierhost_breaker_state{tier=\"primary\"} 2"),
        "{metrics}"
    );
    assert!(
        metrics
            .lines()
            .any(|l| l.starts_with("tierhost_breaker_transitions_total{")
                && l.contains("from=\"closed\"")
                && l.contains("to=\"open\"")
                && l.ends_with(" 1")),
        "{metrics}"
    );
    let (_, tiers) = server.get("/v1/tiers").await;
    let tiers: Value = serde_json::from_str(&tiers).unwrap();
    assert_eq!(tiers["tiers"][0]["breaker"]["state"], "open");
    assert!(
        tiers["tiers"][0]["policies"]
            .as_array()
            .unwrap()
            .contains(&Value::from("breaker"))
    );

    // Hot swap of the other tier (new rules.wasm digest): the primary's breaker stays open.
    let rules = tierhost::builtin::get("rules").unwrap();
    std::fs::write(server.path("rules.wasm"), variant_of(rules, "v2")).unwrap();
    let (status, report) = server.send("POST", "/admin/reload", "").await;
    assert_eq!(status, 200, "{report}");
    let (_, answer) = server.predict("after-swap").await;
    assert_eq!(answer["trail"][0]["reason"]["kind"], "breaker-open");

    // Operators can hold it closed (the primary is called again) and hand it back.
    let force = |mode: &str| format!(r#"{{"mode":"{mode}"}}"#);
    let (status, body) = server
        .send("POST", "/admin/tiers/primary/breaker", force("closed"))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("forced-closed"), "{body}");
    let (_, answer) = server.predict("forced").await;
    assert_eq!(answer["trail"][0]["reason"]["kind"], "trap");
    let (status, body) = server
        .send("POST", "/admin/tiers/primary/breaker", force("automatic"))
        .await;
    assert_eq!((status, body.contains("\"closed\"")), (200, true), "{body}");
    let (status, _) = server
        .send("POST", "/admin/tiers/rules/breaker", force("open"))
        .await;
    assert_eq!(status, 404, "rules has no breaker");
    let (status, _) = server
        .send("POST", "/admin/tiers/primary/breaker", r#"{"mode":"ajar"}"#)
        .await;
    assert_eq!(status, 400);

    let audit = std::fs::read_to_string(server.path("audit.jsonl")).unwrap();
    let transitions: Vec<Value> = audit
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|v| v["event"] == "breaker-transition")
        .collect();
    assert!(
        transitions
            .iter()
            .any(|t| t["tier"] == "primary" && t["from"] == "closed" && t["to"] == "open"),
        "{audit}"
    );
}
