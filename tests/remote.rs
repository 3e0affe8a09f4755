//! Remote-model tiers: `builtin:kserve` granted `[tier.http]` to a real KServe V2 model server
//! on loopback (tests/fixtures/model_server.py, Python standard library, started per test). It
//! serves; each fault of the server (HTTP error, hang, garbage, oversized body, impossible
//! value, nobody listening) is contained with the reason named in the trail; a request outside
//! the allow list is refused by the host and never reaches the server; a tier whose component
//! imports wasi:http without a grant does not load.
use crate::common;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};

use common::http::{Http, Proc, free_port};
use common::*;
use tierhost::{Answer, Decision, Request, Step};

/// The model server, killed when dropped.
struct ModelServer {
    port: u16,
    _process: Proc,
}

impl ModelServer {
    /// Starts the server and waits for the port it prints (a condition, not a pause).
    fn start() -> Self {
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/model_server.py");
        let mut child = Command::new("python3")
            .arg(&script)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("python3 runs the model server (scripts/test.sh installs python3)");
        let stdout = child.stdout.take().expect("piped stdout");
        let process = Proc::new(child);
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("the model server prints its port");
        let port = line
            .trim()
            .strip_prefix("PORT ")
            .and_then(|p| p.parse().ok())
            .unwrap_or_else(|| panic!("unexpected first line from the model server: {line:?}"));
        Self {
            port,
            _process: process,
        }
    }

    fn base(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Requests the server has received.
    async fn requests(&self) -> u64 {
        Http::local(self.port).get_json("/stats").await["requests"]
            .as_u64()
            .expect("stats")
    }
}

/// A cascade of the remote tier (`url`, granted `allow`, with `extra` lines in its
/// `[[tier]]` table and `params`) and the rules tier after it.
fn remote_cascade(url: &str, allow: &str, top: &str, params: &str) -> String {
    format!(
        "[cascade]\nbudget_ms = 60000\n\
         [[tier]]\nname = \"remote\"\nplugin = \"builtin:kserve\"\n{top}\n\
         [tier.limits]\ndeadline_ms = 10000\n\
         [tier.params]\nurl = \"{url}\"\nfeatures = \"amount,trusted_device,new_account\"\n{params}\n\
         [tier.http]\nallow = [{allow}]\n\
         {RULES_TIER}"
    )
}

/// A transaction the model and the rules tier can both judge.
fn transaction(id: &str, amount: f64, trusted: bool, new: bool) -> Request {
    Request::from_json(&format!(
        r#"{{"id":"{id}","features":{{"amount":{amount},"trusted_device":{trusted},"new_account":{new},"account_age_days":3,"merchant_category":"crypto","is_international":true,"has_international_history":false}}}}"#
    ))
    .expect("valid request")
}

/// The remote tier's trail entry.
fn remote_turn(answer: &Answer) -> &tierhost::TrailEntry {
    answer
        .trail
        .iter()
        .find(|e| e.tier == "remote")
        .expect("the remote tier took a turn")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_remote_tier_serves_the_model_servers_answers() {
    let server = ModelServer::start();
    let url = format!("{}/v2/models/fraud/infer", server.base());
    let allow = format!("\"{}/v2/models/fraud\"", server.base());
    let cascade = cascade(&remote_cascade(&url, &allow, "", "")).await;
    let mut served = 0;
    for i in 0..24u32 {
        let amount = f64::from(i) * 250.0;
        let (trusted, new) = (i % 3 == 0, i % 2 == 0);
        let answer = cascade
            .predict(&transaction(&format!("r{i}"), amount, trusted, new))
            .await;
        assert_eq!(answer.served_by.tier, "remote", "{:?}", answer.trail);
        // The model server's own formula, computed here.
        let z = 0.004 * amount - 2.0 * f64::from(u8::from(trusted))
            + 0.8 * f64::from(u8::from(new))
            - 3.0;
        let p = 1.0 / (1.0 + (-z).exp());
        let Decision::Answer {
            label,
            score,
            confidence,
            reasons,
        } = &answer.decision
        else {
            panic!("answered: {:?}", answer.decision)
        };
        let (want_label, want_confidence) = if p >= 0.5 {
            ("block", p)
        } else {
            ("allow", 1.0 - p)
        };
        assert_eq!(label, want_label, "amount {amount}");
        assert!((score - p).abs() < 1e-9, "score {score} vs {p}");
        assert!((confidence - want_confidence).abs() < 1e-9);
        assert_eq!(reasons, &vec!["model server probability".to_string()]);
        served += 1;
    }
    assert_eq!(served, 24);
    assert_eq!(server.requests().await, 24, "one model call per request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn class_probabilities_map_to_labels() {
    let server = ModelServer::start();
    let url = format!("{}/v2/models/classes/infer", server.base());
    let allow = format!("\"{}/v2/models/classes\"", server.base());
    let toml = remote_cascade(&url, &allow, "", "labels = \"allow, review, block\"");
    let answer = cascade(&toml)
        .await
        .predict(&transaction("c", 10.0, true, false))
        .await;
    assert_eq!(answer.served_by.tier, "remote", "{:?}", answer.trail);
    let Decision::Answer {
        label, confidence, ..
    } = &answer.decision
    else {
        panic!("answered: {:?}", answer.decision)
    };
    assert_eq!((label.as_str(), *confidence), ("review", 0.7));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_model_server_fault_falls_back_with_its_reason() {
    let server = ModelServer::start();
    let base = server.base();
    let allow = format!("\"{base}/v2/models\"");
    // Nothing listens on a port that was just free.
    let closed = free_port();
    let cases: Vec<(&str, String, &str, &str, &str)> = vec![
        // (case, url, extra [[tier]] lines, reason kind, part of the message)
        (
            "http error",
            format!("{base}/v2/models/error/infer"),
            "",
            "tier-error",
            "HTTP 500: {\"error\": \"model crashed: CUDA out of memory\"}",
        ),
        (
            "hang",
            format!("{base}/v2/models/hang/infer"),
            "",
            "deadline",
            "deadline of 300000 us",
        ),
        (
            "garbage",
            format!("{base}/v2/models/garbage/infer"),
            "",
            "tier-error",
            "not KServe V2 JSON",
        ),
        (
            "huge body",
            format!("{base}/v2/models/huge/infer"),
            "",
            "tier-error",
            "HTTP response body size exceeds limit: 65536 bytes",
        ),
        (
            "impossible value",
            format!("{base}/v2/models/impossible/infer"),
            "",
            "invalid-output",
            "confidence",
        ),
        (
            "nobody listening",
            format!("http://127.0.0.1:{closed}/v2/models/fraud/infer"),
            "",
            "tier-error",
            "connection refused",
        ),
    ];
    for (case, url, top, kind, message) in cases {
        let allow = if case == "nobody listening" {
            format!("\"http://127.0.0.1:{closed}/v2/models\"")
        } else {
            allow.clone()
        };
        let mut toml = remote_cascade(&url, &allow, top, "");
        if case == "hang" {
            toml = toml.replacen("deadline_ms = 10000", "deadline_ms = 300", 1);
        }
        toml = toml.replacen(
            "[tier.http]\n",
            "[tier.http]\nmax_response_bytes = 65536\n",
            1,
        );
        let answer = cascade(&toml)
            .await
            .predict(&transaction(case, 100.0, false, true))
            .await;
        assert_eq!(answer.served_by.tier, "rules", "{case}: {:?}", answer.trail);
        assert!(matches!(answer.decision, Decision::Answer { .. }), "{case}");
        let turn = remote_turn(&answer);
        assert_eq!(turn.step, Step::FellThrough, "{case}");
        let reason = turn.reason.as_ref().expect("a reason");
        assert_eq!(reason.kind(), kind, "{case}: {reason}");
        assert!(
            reason.to_string().contains(message),
            "{case}: {reason} does not mention {message:?}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn requests_outside_the_allow_list_are_refused_and_never_sent() {
    let server = ModelServer::start();
    let base = server.base();
    let granted = format!("\"{base}/v2/models/fraud\"");
    let elsewhere = [
        // Another model on the same server: the path is not under the prefix.
        format!("{base}/v2/models/classes/infer"),
        // A prefix that only starts like the granted one.
        format!("{base}/v2/models/fraudulent/infer"),
        // Walking out of the prefix.
        format!("{base}/v2/models/fraud/../classes/infer"),
        // The same path on another port and another host.
        format!("http://127.0.0.1:{}/v2/models/fraud/infer", free_port()),
        "http://10.255.255.1/v2/models/fraud/infer".to_string(),
    ];
    for url in &elsewhere {
        let answer = cascade(&remote_cascade(url, &granted, "", ""))
            .await
            .predict(&transaction("probe", 100.0, false, true))
            .await;
        assert_eq!(answer.served_by.tier, "rules", "{url}");
        let reason = remote_turn(&answer).reason.as_ref().expect("a reason");
        assert_eq!(reason.kind(), "capability-denied", "{url}: {reason}");
        assert!(
            reason.to_string().contains("not under [tier.http] allow"),
            "{reason}"
        );
    }
    assert_eq!(
        server.requests().await,
        0,
        "a refused request reached the server"
    );

    // `max_requests` counts per call: a grant of one request serves call after call.
    let toml = remote_cascade(&format!("{base}/v2/models/fraud/infer"), &granted, "", "").replacen(
        "[tier.http]\n",
        "[tier.http]\nmax_requests = 1\n",
        1,
    );
    let cascade = cascade(&toml).await;
    for i in 0..3 {
        let answer = cascade
            .predict(&transaction(&format!("once-{i}"), 100.0, false, true))
            .await;
        assert_eq!(answer.served_by.tier, "remote", "{:?}", answer.trail);
    }
}

#[tokio::test]
async fn a_component_that_imports_wasi_http_without_a_grant_does_not_load() {
    let toml = format!(
        "[[tier]]\nname = \"remote\"\nplugin = \"builtin:kserve\"\n\
         [tier.params]\nurl = \"http://127.0.0.1:9/v2/models/fraud/infer\"\nfeatures = \"amount\"\n\
         {RULES_TIER}"
    );
    let answer = cascade(&toml).await.predict(&request("no-grant")).await;
    assert_eq!(answer.served_by.tier, "rules");
    let reason = remote_turn(&answer).reason.as_ref().expect("a reason");
    assert_eq!(reason.kind(), "load-failed");
    assert!(
        reason
            .to_string()
            .contains("imports wasi:http/outgoing-handler"),
        "{reason}"
    );
    assert!(
        reason.to_string().contains("no [tier.http] grant"),
        "{reason}"
    );
}

#[test]
fn an_https_or_malformed_grant_is_refused_with_the_field() {
    for (allow, problem) in [
        (
            "\"https://models.internal/v2\"",
            "https is not supported yet",
        ),
        ("\"models.internal/v2\"", "must start with http://"),
    ] {
        let toml = format!(
            "[[tier]]\nname = \"remote\"\nplugin = \"builtin:kserve\"\n[tier.http]\nallow = [{allow}]\n"
        );
        let error = tierhost::Config::parse(&toml, Path::new("t.toml"), Path::new("."))
            .expect_err("refused")
            .to_string();
        assert!(error.contains("http.allow"), "{error}");
        assert!(error.contains(problem), "{error}");
    }
}
