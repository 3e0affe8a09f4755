//! Shadow runs and promote / rollback: a candidate that disagrees with the live tier on a
//! known share of requests is measured at that share, with the disagreeing request ids, while
//! the live answers stay the live tier's; the promotion gate refuses a candidate below its
//! threshold or one that faults; promote and rollback switch versions atomically under load
//! (every answer is consistent with the sha256 that served it) and rollback restores the exact
//! previous version; the HTTP endpoints and metrics show the same.
use crate::common;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::http::Http;
use common::{variant_of, wait_for};
use serde_json::{Value, json};
use tierhost::{CascadeService, Config, Decision, FeatureValue, Request, RolloutError};

/// Live rules: `x >= 50` is high. The candidate's: `x >= 60`. On x = 0..99 they disagree on
/// exactly x = 50..59: 10% of the requests.
fn rules(threshold: u32) -> String {
    json!({
        "rules": [
            { "id": "high", "when": [["x", ">=", threshold]], "label": "high", "precision": 0.9 },
            { "id": "low", "when": [["x", ">=", 0]], "label": "low", "precision": 0.9 }
        ]
    })
    .to_string()
}

/// A config dir with the live rules (`builtin:ruleset`), the candidate's rules and the
/// candidate plugin (the same component with a custom section: same behaviour, new sha256).
fn write_dir(dir: &Path, shadow: &str) -> Config {
    std::fs::write(dir.join("live.json"), rules(50)).unwrap();
    std::fs::write(dir.join("candidate.json"), rules(60)).unwrap();
    let ruleset = tierhost::builtin::get("ruleset").expect("builtin ruleset");
    std::fs::write(dir.join("candidate.wasm"), variant_of(ruleset, "candidate")).unwrap();
    let toml = format!(
        "[[tier]]\nname = \"rules\"\nplugin = \"builtin:ruleset\"\nmodel = \"live.json\"\n\
         [tier.limits]\ndeadline_ms = 10000\n\
         [tier.shadow]\nplugin = \"candidate.wasm\"\nmodel = \"candidate.json\"\n{shadow}\n"
    );
    let path = dir.join("cascade.toml");
    std::fs::write(&path, &toml).unwrap();
    Config::load(&path).expect("valid config")
}

fn request(i: u32) -> Request {
    Request::new(
        format!("r{i}"),
        vec![("x".into(), FeatureValue::Integer(i64::from(i % 100)))],
    )
}

fn label(answer: &tierhost::Answer) -> &str {
    match &answer.decision {
        Decision::Answer { label, .. } => label,
        other => panic!("expected an answer, got {other:?}"),
    }
}

async fn settle(service: &CascadeService) {
    let live = service.current();
    live.cascade.tiers()[0]
        .shadow
        .as_ref()
        .expect("a shadow")
        .settle()
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_report_measures_a_known_disagreement_and_live_answers_are_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_dir(dir.path(), "max_queued = 10000\ndisagreements = 500");
    let service = CascadeService::new(config).await.unwrap();
    for i in 0..1000 {
        let answer = service.predict(&request(i)).await;
        let expected = if i % 100 >= 50 { "high" } else { "low" };
        assert_eq!(
            label(&answer),
            expected,
            "the live tier answers, not the candidate"
        );
    }
    settle(&service).await;
    let report = service.shadow_report("rules").unwrap();
    assert_eq!(report.dropped, 0);
    assert_eq!(report.calls, 1000);
    assert_eq!(report.both_answered, 1000);
    assert_eq!(report.agreed, 900);
    assert_eq!(report.agreement, Some(0.9));
    assert_eq!(report.disagreements.len(), 100);
    for d in &report.disagreements {
        let i: u32 = d.request_id[1..].parse().unwrap();
        assert!(
            (50..60).contains(&(i % 100)),
            "{} is not a disagreement",
            d.request_id
        );
    }
    assert!(report.faults.candidate.is_empty() && report.faults.live.is_empty());
    assert!(report.gate.passes, "no gate configured");
    assert_eq!(
        report.candidate.as_ref().unwrap().sha256,
        hex_sha256(&std::fs::read(dir.path().join("candidate.wasm")).unwrap())
    );
}

fn hex_sha256(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_share_shadows_about_that_share_of_requests() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_dir(dir.path(), "share = 0.5\nmax_queued = 10000");
    let service = CascadeService::new(config).await.unwrap();
    for i in 0..2000 {
        service.predict(&request(i)).await;
    }
    settle(&service).await;
    let report = service.shadow_report("rules").unwrap();
    // Binomial(2000, 0.5): sd 22; 6 sd either side.
    assert!(
        (868..=1132).contains(&report.calls),
        "{} calls",
        report.calls
    );
    let agreement = report.agreement.unwrap();
    assert!((agreement - 0.9).abs() < 0.05, "agreement {agreement}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_gate_refuses_a_candidate_below_its_threshold_or_one_that_faults() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_dir(
        dir.path(),
        "max_queued = 10000\npromote_min_agreement = 0.95\npromote_min_calls = 200",
    );
    let service = CascadeService::new(config).await.unwrap();
    let refusal = |e: RolloutError| match e {
        RolloutError::Gate { refusal, .. } => refusal,
        other => panic!("expected a gate refusal, got {other}"),
    };
    // Too few calls first, then too little agreement; the numbers are in the refusal.
    let r = refusal(service.promote("rules", "test").await.unwrap_err());
    assert!(r.contains("0 compared calls") && r.contains("200"), "{r}");
    for i in 0..300 {
        service.predict(&request(i)).await;
    }
    settle(&service).await;
    let r = refusal(service.promote("rules", "test").await.unwrap_err());
    assert!(
        r.contains("agreement 0.9000 over 300") && r.contains("0.95"),
        "{r}"
    );
    assert_eq!(service.current().generation, 1, "nothing changed");

    // A candidate that traps never passes, whatever its agreement.
    let chaos = dir.path().join("chaos.toml");
    std::fs::write(
        &chaos,
        "[[tier]]\nname = \"rules\"\nplugin = \"builtin:ruleset\"\nmodel = \"live.json\"\n\
         [tier.limits]\ndeadline_ms = 10000\n\
         [tier.shadow]\nplugin = \"builtin:chaos\"\nmax_queued = 10000\npromote_min_agreement = 0.0\n\
         promote_min_calls = 0\nparams = { mode = \"trap\" }\n",
    )
    .unwrap();
    let service = CascadeService::new(Config::load(&chaos).unwrap())
        .await
        .unwrap();
    for i in 0..50 {
        let answer = service.predict(&request(i)).await;
        assert!(
            !answer.degraded,
            "a faulting candidate does not touch live answers"
        );
    }
    settle(&service).await;
    let report = service.shadow_report("rules").unwrap();
    assert_eq!(report.faults.candidate.get("trap"), Some(&50));
    let r = refusal(service.promote("rules", "test").await.unwrap_err());
    assert!(r.contains("faulted 50 times (trap: 50)"), "{r}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn promote_and_rollback_switch_atomically_under_load() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_dir(dir.path(), "");
    let service = CascadeService::new(config).await.unwrap();
    let live_sha = service.current().cascade.tiers()[0]
        .sandbox
        .as_ref()
        .unwrap()
        .plugin()
        .info()
        .sha256
        .clone();
    let candidate_sha = hex_sha256(&std::fs::read(dir.path().join("candidate.wasm")).unwrap());

    // Load: x = 55 is "high" for the live rules and "low" for the candidate's, so every
    // answer must match the version that served it.
    let stop = Arc::new(AtomicBool::new(false));
    let mut clients = Vec::new();
    for c in 0..4 {
        let (service, stop) = (service.clone(), stop.clone());
        let (live_sha, candidate_sha) = (live_sha.clone(), candidate_sha.clone());
        clients.push(tokio::spawn(async move {
            let mut seen = (0u64, 0u64);
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let req = Request::new(
                    format!("load-{c}-{n}"),
                    vec![("x".into(), FeatureValue::Integer(55))],
                );
                let answer = service.predict(&req).await;
                let sha = answer.served_by.sha256.clone().unwrap_or_default();
                if sha == live_sha {
                    assert_eq!(label(&answer), "high");
                    seen.0 += 1;
                } else if sha == candidate_sha {
                    assert_eq!(label(&answer), "low");
                    seen.1 += 1;
                } else {
                    panic!("served by neither version: {answer:?}");
                }
            }
            seen
        }));
    }
    let served_by = |sha: &str| {
        let service = service.clone();
        let sha = sha.to_string();
        async move {
            let req = Request::new("probe", vec![("x".into(), FeatureValue::Integer(55))]);
            service.predict(&req).await.served_by.sha256 == Some(sha)
        }
    };
    wait_for("answers from the live version", async || {
        served_by(&live_sha).await.then_some(())
    })
    .await;

    let promoted = service.promote("rules", "ana").await.unwrap();
    assert_eq!(promoted.from.1, live_sha);
    assert_eq!(promoted.to.1, candidate_sha);
    assert_eq!(promoted.by, "ana");
    assert!(
        served_by(&candidate_sha).await,
        "new requests go to the candidate"
    );
    assert!(
        service.current().cascade.tiers()[0].shadow.is_none(),
        "the promoted tier has no shadow left"
    );

    let rolled = service.rollback("rules", "ana").await.unwrap();
    assert_eq!(
        rolled.to.1, live_sha,
        "rollback restores the exact previous sha256"
    );
    assert!(served_by(&live_sha).await);
    assert_eq!(service.current().generation, 3);
    match service.rollback("rules", "ana").await {
        Err(RolloutError::NoRollback(why)) => {
            assert!(why.contains("nothing to roll back"), "{why}")
        }
        other => panic!("{other:?}"),
    }

    stop.store(true, Ordering::Relaxed);
    let mut totals = (0, 0);
    for client in clients {
        let (l, c) = client.await.expect("no client saw an inconsistent answer");
        totals = (totals.0 + l, totals.1 + c);
    }
    assert!(totals.0 > 0, "answers from the live version under load");
}

/// A served service whose admin endpoints need `token`.
async fn serve(config: Config, token: &str) -> (Http, Arc<CascadeService>) {
    let service = CascadeService::new(config).await.unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let http = Http::new(format!("http://{}", listener.local_addr().unwrap()));
    tokio::spawn(tierhost::server::serve_with(
        service.clone(),
        listener,
        tierhost::server::AdminAuth::bearer(token),
    ));
    http.wait_ready().await;
    (http, service)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_endpoints_and_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let config = write_dir(
        dir.path(),
        "max_queued = 10000\npromote_min_agreement = 0.99\npromote_min_calls = 10",
    );
    let (http, service) = serve(config, "t").await;
    let admin = http.with_bearer("t");
    for i in 0..100 {
        let body = json!({"id": format!("h{i}"), "features": {"x": i}}).to_string();
        let (status, _) = http.predict_with(body).await;
        assert_eq!(status, 200);
    }
    settle(&service).await;
    let report = http.get_json("/v1/tiers/rules/shadow").await;
    assert_eq!(report["calls"], 100);
    assert_eq!(report["agreement"], 0.9);
    assert_eq!(report["gate"]["passes"], false);
    assert_eq!(http.get("/v1/tiers/nope/shadow").await.0, 404);

    assert_eq!(
        http.send("POST", "/admin/tiers/rules/promote", "").await.0,
        401
    );
    let (status, body) = admin
        .send("POST", "/admin/tiers/rules/promote", r#"{"by":"ops"}"#)
        .await;
    assert_eq!(status, 409, "the gate refuses: {body}");
    let refused: Value = serde_json::from_str(&body).unwrap();
    assert!(
        refused["error"].as_str().unwrap().contains("below 0.99"),
        "{body}"
    );
    assert_eq!(refused["shadow"]["agreement"], 0.9);
    let (status, body) = admin.send("POST", "/admin/tiers/rules/rollback", "").await;
    assert_eq!(status, 409, "{body}");

    let metric = http
        .metric("tierhost_shadow_calls_total{outcome=\"disagree\",tier=\"rules\"}")
        .await;
    assert_eq!(metric, 10.0);
    let ratio = http
        .metric("tierhost_shadow_agreement_ratio{tier=\"rules\"}")
        .await;
    assert_eq!(ratio, 0.9);
}

/// `tierhost` (the real binary) with `args`, the admin token in the environment when given;
/// run off the runtime's threads so the in-process server keeps answering. Exit code, stdout,
/// stderr.
async fn cli(args: Vec<String>, token: Option<&str>) -> (i32, String, String) {
    let token = token.map(str::to_string);
    tokio::task::spawn_blocking(move || {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_tierhost"));
        command
            .args(&args)
            .env_remove(tierhost::server::ADMIN_TOKEN_ENV);
        if let Some(token) = token {
            command.env(tierhost::server::ADMIN_TOKEN_ENV, token);
        }
        let out = command.output().expect("run tierhost");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    })
    .await
    .unwrap()
}

fn args(command: &str, http: &Http, extra: &[&str]) -> Vec<String> {
    [command, "--url", &http.base, "--tier"]
        .iter()
        .chain(extra)
        .map(|s| s.to_string())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_prints_the_report_and_promotes_and_rolls_back_a_running_server() {
    // A gate the candidate fails: `promote` exits 1 with the numbers.
    let dir = tempfile::tempdir().unwrap();
    let config = write_dir(
        dir.path(),
        "max_queued = 10000\npromote_min_agreement = 0.95\npromote_min_calls = 10",
    );
    let (http, service) = serve(config, "tok").await;
    for i in 0..100 {
        let body = json!({"id": format!("c{i}"), "features": {"x": i}}).to_string();
        assert_eq!(http.predict_with(body).await.0, 200);
    }
    settle(&service).await;
    let (code, stdout, stderr) = cli(args("shadow", &http, &["rules"]), None).await;
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("shadow of tier `rules`"), "{stdout}");
    assert!(
        stdout.contains("calls 100 (share 1.00), dropped 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("both answered 100, same label 90: agreement 0.9000"),
        "{stdout}"
    );
    assert!(
        stdout.contains("promotion gate: refuses: agreement 0.9000"),
        "{stdout}"
    );
    assert!(stdout.contains("    c55  live: high"), "{stdout}");
    let (code, stdout, _) = cli(args("shadow", &http, &["rules", "--json"]), None).await;
    assert_eq!(code, 0);
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["agreement"], 0.9);
    let (code, _, stderr) = cli(args("shadow", &http, &["nope"]), None).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("no tier named \"nope\""), "{stderr}");

    let (code, _, stderr) = cli(args("promote", &http, &["rules"]), None).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("no bearer token") && stderr.contains("HTTP 401"),
        "{stderr}"
    );
    let (code, _, stderr) = cli(args("promote", &http, &["rules"]), Some("wrong")).await;
    assert_eq!(code, 1);
    assert!(stderr.contains("HTTP 403"), "{stderr}");
    let (code, stdout, stderr) = cli(args("promote", &http, &["rules"]), Some("tok")).await;
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stderr.contains(
            "promotion refused: agreement 0.9000 over 100 calls is below 0.95 \
             (promote_min_agreement) (HTTP 409)"
        ),
        "{stderr}"
    );
    assert!(
        stderr.contains("shadow of tier `rules`"),
        "the report the gate decided on: {stderr}"
    );
    assert_eq!(service.current().generation, 1, "nothing changed");

    // No gate: promote, then roll back, by name; a second rollback has nothing to undo.
    let dir = tempfile::tempdir().unwrap();
    let (http, service) = serve(write_dir(dir.path(), ""), "tok").await;
    let sha = |service: &CascadeService| {
        service.current().cascade.tiers()[0]
            .sandbox
            .as_ref()
            .unwrap()
            .plugin()
            .info()
            .sha256
            .clone()
    };
    let live_sha = sha(&service);
    let candidate_sha = hex_sha256(&std::fs::read(dir.path().join("candidate.wasm")).unwrap());
    let (code, stdout, stderr) = cli(
        args("promote", &http, &["rules", "--by", "ana"]),
        Some("tok"),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.starts_with(&format!(
            "promoted tier \"rules\": 0.1.0 (sha256 {}) -> 0.1.0 (sha256 {}), generation 2, by ana",
            &live_sha[..12],
            &candidate_sha[..12]
        )),
        "{stdout}"
    );
    assert_eq!(sha(&service), candidate_sha);
    let (code, stdout, stderr) = cli(
        args("rollback", &http, &["rules", "--by", "ana", "--json"]),
        Some("tok"),
    )
    .await;
    assert_eq!(code, 0, "{stderr}");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["action"], "rollback");
    assert_eq!(report["to"][1], live_sha.as_str());
    assert_eq!(sha(&service), live_sha, "the exact previous version serves");
    let (code, _, stderr) = cli(args("rollback", &http, &["rules"]), Some("tok")).await;
    assert_eq!(code, 1);
    assert!(
        stderr.contains("nothing to roll back") && stderr.contains("HTTP 409"),
        "{stderr}"
    );
}
