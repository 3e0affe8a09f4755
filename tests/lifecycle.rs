//! The real `tierhost serve` process and its signals: SIGHUP reloads the changed config (and
//! a broken one is rejected while the working cascade keeps serving); SIGTERM stops accepting,
//! answers the requests in flight, flushes the audit log and exits 0. Every step waits on what
//! the process shows (`/v1/tiers`, `/metrics`, its exit), never on a fixed pause.
use crate::common;

use common::http::Served;
use common::{
    PATIENCE, RULES_FILE_TIER, replace_atomically, variant_of, wait_for, write_config_dir,
};
use serde_json::Value;

/// File watching off: only the signal may reload.
fn config(name: &str) -> String {
    format!(
        "[cascade]\nname = \"{name}\"\nbudget_ms = 20000\n[server]\nwatch = false\n{RULES_FILE_TIER}"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sighup_reloads_the_changed_config_and_rejects_a_broken_one() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_dir(dir.path(), &config("before"));
    let server = Served::start(&path).await;
    let http = &server.http;
    let tiers = http.get_json("/v1/tiers").await;
    assert_eq!(
        (tiers["cascade"].as_str(), tiers["generation"].as_u64()),
        (Some("before"), Some(1))
    );
    let old_sha = tiers["tiers"][0]["info"]["sha256"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, _) = http.predict("before-hup").await;
    assert_eq!(status, 200);

    // A new plugin build and a renamed cascade, picked up on SIGHUP.
    let rules = tierhost::builtin::get("rules").unwrap();
    replace_atomically(&dir.path().join("rules.wasm"), &variant_of(rules, "hup"));
    std::fs::write(&path, config("after")).unwrap();
    server.proc.signal("HUP");
    let tiers: Value = wait_for("SIGHUP to apply the new config", async || {
        let tiers = http.get_json("/v1/tiers").await;
        (tiers["generation"] == 2).then_some(tiers)
    })
    .await;
    assert_eq!(tiers["cascade"], "after");
    let new_sha = tiers["tiers"][0]["info"]["sha256"].as_str().unwrap();
    assert_ne!(new_sha, old_sha);
    let (_, answer) = http.predict("after-hup").await;
    assert_eq!(answer["served_by"]["sha256"], new_sha);
    assert_eq!(
        http.metric(r#"tierhost_reloads_total{outcome="applied"}"#)
            .await,
        1.0
    );

    // A config that does not parse is rejected; generation 2 keeps serving.
    std::fs::write(&path, "[[tier]]\nname = ").unwrap();
    server.proc.signal("HUP");
    wait_for("SIGHUP to reject the broken config", async || {
        let rejected = http
            .metric(r#"tierhost_reloads_total{outcome="rejected"}"#)
            .await;
        (rejected == 1.0).then_some(())
    })
    .await;
    assert_eq!(http.get_json("/v1/tiers").await["generation"], 2);
    let (status, answer) = http.predict("after-broken").await;
    assert_eq!(status, 200);
    assert_eq!(answer["served_by"]["sha256"], new_sha);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_answers_requests_in_flight_flushes_the_audit_log_and_exits_0() {
    const IN_FLIGHT: usize = 4;
    let dir = tempfile::tempdir().unwrap();
    // The primary blocks (a WASI sleep on the frozen clock) until its 3 s deadline, then the
    // rules tier answers: each request is in flight long enough to be caught by the signal.
    let path = write_config_dir(
        dir.path(),
        &format!(
            "[cascade]\nbudget_ms = 20000\naudit_log = \"audit.jsonl\"\n[server]\nwatch = false\n\
             [[tier]]\nname = \"primary\"\nplugin = \"builtin:chaos\"\n[tier.limits]\ndeadline_ms = 3000\n\
             [tier.params]\nmode = \"sleep\"\n{RULES_FILE_TIER}"
        ),
    );
    let server = Served::start(&path).await;
    let requests: Vec<_> = (0..IN_FLIGHT)
        .map(|i| {
            let http = server.http.clone();
            tokio::spawn(async move { http.predict(&format!("drain-{i}")).await })
        })
        .collect();
    wait_for("every request to be in flight", async || {
        let in_flight = server.http.metric("tierhost_in_flight_requests").await;
        (in_flight == IN_FLIGHT as f64).then_some(())
    })
    .await;

    server.proc.signal("TERM");
    for request in requests {
        let (status, answer) = request.await.unwrap();
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["served_by"]["tier"], "rules", "{answer}");
        assert_eq!(answer["trail"][0]["reason"]["kind"], "deadline", "{answer}");
    }
    let status = tokio::task::spawn_blocking(move || server.proc.wait_exit(PATIENCE))
        .await
        .unwrap()
        .expect("tierhost serve exits after SIGTERM");
    assert!(status.success(), "exit status {status}");

    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let mut ids: Vec<String> = audit
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .inspect(|event| {
            assert_eq!(
                (&event["from_tier"], &event["reason"], &event["served_by"]),
                (
                    &Value::from("primary"),
                    &Value::from("deadline"),
                    &Value::from("rules")
                ),
                "{event}"
            )
        })
        .map(|event| event["request_id"].as_str().unwrap().to_string())
        .collect();
    ids.sort();
    let expected: Vec<String> = (0..IN_FLIGHT).map(|i| format!("drain-{i}")).collect();
    assert_eq!(ids, expected, "one fallback event per request, all flushed");
}
