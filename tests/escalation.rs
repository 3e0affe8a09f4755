//! Human escalation: abstentions and escalation-point answers are committed to the review
//! queue before the answer is returned, with the trail and only the features the redaction
//! rule allows (in the queue and the audit log alike); a full, failing or slow queue is
//! answered as not recorded and counted; the review API resolves items behind the admin token;
//! the config refuses settings that cannot work.
use crate::common;

use std::path::Path;
use std::sync::Arc;

use common::http::Http;
use common::{RULES_TIER, chaos_tier, request, wait_for, write_config_dir};
use serde_json::{Value, json};
use tierhost::escalation::{EscalationStore, Status};
use tierhost::{
    Cascade, CascadeService, Config, Decision, EscalationProblem, EscalationReceipt, SAFE_DEFAULT,
};

const ABSTAIN: &str = "[safe_default]\nabstain = \"escalated to human review\"\n";

fn trap_tier() -> String {
    chaos_tier("primary", "trap", "deadline_ms = 10000")
}

fn load(dir: &Path, toml: &str) -> Config {
    Config::parse(toml, &dir.join("cascade.toml"), dir).expect("valid config")
}

fn recorded_id(receipt: Option<&EscalationReceipt>) -> String {
    match receipt {
        Some(EscalationReceipt::Recorded { id }) => id.clone(),
        other => panic!("expected a recorded escalation, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abstention_is_committed_with_its_trail_and_redacted_features_before_the_answer() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        &format!(
            "[cascade]\nname = \"fraud\"\naudit_log = \"audit.jsonl\"\n{ABSTAIN}\
             [escalation]\nqueue = \"review/queue.db\"\nredact = [\"merchant_category\"]\n{}",
            trap_tier()
        ),
    );
    let cascade = Cascade::with_engine(common::engine(), &config)
        .await
        .unwrap();
    let answer = cascade.predict(&request("esc-1")).await;
    assert!(matches!(answer.decision, Decision::Abstain { .. }));
    let id = recorded_id(answer.escalation.as_ref());

    // Committed before the answer came back: a separate connection sees it at once.
    let store = EscalationStore::open(&dir.path().join("review/queue.db")).unwrap();
    let item = store
        .get(&id)
        .unwrap()
        .expect("the escalation is in the queue");
    assert_eq!(item.request_id, "esc-1");
    assert_eq!(item.cascade, "fraud");
    assert_eq!(item.config_digest, config.answer_digest());
    assert_eq!(item.served_by, SAFE_DEFAULT);
    assert_eq!(item.status, Status::Pending);
    let names: Vec<&str> = item.features.0.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "amount",
            "account_age_days",
            "is_international",
            "has_international_history"
        ],
        "the redacted feature is not stored; the rest keep the caller's order"
    );
    assert_eq!(item.trail[0]["tier"], "primary");
    assert_eq!(item.trail[0]["reason"]["kind"], "trap");
    assert_eq!(item.decision["outcome"], "abstain");

    // The audit log follows the same rule.
    let audit = std::fs::read_to_string(dir.path().join("audit.jsonl")).unwrap();
    let line: Value = serde_json::from_str(audit.lines().next().unwrap()).unwrap();
    assert_eq!(line["features"]["amount"], 9000);
    assert!(
        line["features"].get("merchant_category").is_none(),
        "{line}"
    );
    assert!(
        !audit.contains("crypto"),
        "a redacted value reached the audit log: {audit}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_allowlist_keeps_only_its_features_and_escalation_points_escalate_answers() {
    let dir = tempfile::tempdir().unwrap();
    let config = load(
        dir.path(),
        &format!(
            "[escalation]\nqueue = \"q.db\"\ntiers = [\"rules\"]\nfeatures = [\"amount\"]\n{RULES_TIER}"
        ),
    );
    let cascade = Cascade::with_engine(common::engine(), &config)
        .await
        .unwrap();
    let answer = cascade.predict(&request("point-1")).await;
    assert_eq!(answer.served_by.tier, "rules");
    assert!(matches!(answer.decision, Decision::Answer { .. }));
    let id = recorded_id(answer.escalation.as_ref());
    let store = EscalationStore::open(&dir.path().join("q.db")).unwrap();
    let item = store.get(&id).unwrap().unwrap();
    assert_eq!(item.served_by, "rules");
    assert_eq!(item.features.0, vec![("amount".to_string(), json!(9000))]);

    // A cascade whose answers do not escalate carries no receipt.
    let plain = Cascade::with_engine(common::engine(), &load(dir.path(), RULES_TIER))
        .await
        .unwrap();
    assert_eq!(plain.predict(&request("plain")).await.escalation, None);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_or_locked_queue_answers_not_recorded_and_the_request_is_still_answered() {
    let dir = tempfile::tempdir().unwrap();
    // Full: max_pending = 1.
    let full = load(
        dir.path(),
        &format!(
            "{ABSTAIN}[escalation]\nqueue = \"full.db\"\nmax_pending = 1\n{}",
            trap_tier()
        ),
    );
    let cascade = Cascade::with_engine(common::engine(), &full).await.unwrap();
    recorded_id(cascade.predict(&request("f1")).await.escalation.as_ref());
    let second = cascade.predict(&request("f2")).await;
    assert!(matches!(second.decision, Decision::Abstain { .. }));
    match second.escalation {
        Some(EscalationReceipt::NotRecorded { problem, detail }) => {
            assert_eq!(problem, EscalationProblem::Full);
            assert!(detail.contains("max_pending = 1"), "{detail}");
        }
        other => panic!("{other:?}"),
    }

    // Locked by another writer: the request waits at most write_timeout_ms, then is answered
    // with a timeout receipt; once the lock stays past SQLite's busy timeout the write fails.
    let locked = load(
        dir.path(),
        &format!(
            "{ABSTAIN}[escalation]\nqueue = \"locked.db\"\nwrite_timeout_ms = 50\n{}",
            trap_tier()
        ),
    );
    let cascade = Cascade::with_engine(common::engine(), &locked)
        .await
        .unwrap();
    let holder = rusqlite_lock(&dir.path().join("locked.db"));
    let answer = cascade.predict(&request("l1")).await;
    assert!(matches!(answer.decision, Decision::Abstain { .. }));
    assert!(
        matches!(
            answer.escalation,
            Some(EscalationReceipt::NotRecorded {
                problem: EscalationProblem::Timeout,
                ..
            })
        ),
        "{:?}",
        answer.escalation
    );
    drop(holder);

    let stuck = load(
        dir.path(),
        &format!(
            "{ABSTAIN}[escalation]\nqueue = \"stuck.db\"\nwrite_timeout_ms = 60000\n{}",
            trap_tier()
        ),
    );
    let cascade = Cascade::with_engine(common::engine(), &stuck)
        .await
        .unwrap();
    let holder = rusqlite_lock(&dir.path().join("stuck.db"));
    let answer = cascade.predict(&request("s1")).await;
    match answer.escalation {
        Some(EscalationReceipt::NotRecorded { problem, detail }) => {
            assert_eq!(problem, EscalationProblem::Failed);
            assert!(detail.contains("stuck.db"), "{detail}");
        }
        other => panic!("{other:?}"),
    }
    drop(holder);
    // The queue recovers once the other writer lets go.
    recorded_id(cascade.predict(&request("s2")).await.escalation.as_ref());
}

/// Holds SQLite's write lock on `path` (an open `BEGIN IMMEDIATE` transaction on another
/// connection, as a stuck writer would) until dropped.
fn rusqlite_lock(path: &Path) -> LockHolder {
    let (locked_tx, locked_rx) = std::sync::mpsc::channel();
    let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
    let path = path.to_path_buf();
    let thread = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(&path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        let _ = release_rx.recv();
        conn.execute_batch("ROLLBACK").unwrap();
    });
    locked_rx.recv().unwrap();
    LockHolder {
        release: Some(release_tx),
        thread: Some(thread),
    }
}

struct LockHolder {
    release: Option<std::sync::mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Drop for LockHolder {
    fn drop(&mut self) {
        drop(self.release.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

#[test]
fn the_config_refuses_escalation_settings_that_cannot_work() {
    let refuse = |toml: &str, field: &str| {
        let err = Config::parse(toml, Path::new("c.toml"), Path::new("."))
            .err()
            .unwrap_or_else(|| panic!("accepted: {toml}"))
            .to_string();
        assert!(err.contains(field), "{field} not named in: {err}");
    };
    refuse(
        &format!(
            "{ABSTAIN}[escalation]\nqueue = \"q.db\"\nfeatures = [\"a\"]\nredact = [\"b\"]\n{RULES_TIER}"
        ),
        "escalation.redact",
    );
    refuse(
        &format!("[escalation]\nqueue = \"q.db\"\ntiers = [\"nope\"]\n{RULES_TIER}"),
        "escalation.tiers",
    );
    refuse(
        &format!("[escalation]\nqueue = \"q.db\"\n{RULES_TIER}"),
        "nothing would ever escalate",
    );
    refuse(
        &format!("{ABSTAIN}[escalation]\nqueue = \"q.db\"\nlabels = [\"a\", \"a\"]\n{RULES_TIER}"),
        "escalation.labels",
    );
    refuse(
        &format!("{ABSTAIN}[escalation]\nqueue = \"q.db\"\nmax_pending = 0\n{RULES_TIER}"),
        "escalation.max_pending",
    );
    refuse(
        &format!("{ABSTAIN}[escalation]\nqueue = \"q.db\"\nsync = \"sometimes\"\n{RULES_TIER}"),
        "sync",
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queue_that_cannot_be_opened_is_a_load_error_naming_the_field() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("a-directory.db")).unwrap();
    let config = load(
        dir.path(),
        &format!(
            "{ABSTAIN}[escalation]\nqueue = \"a-directory.db\"\n{}",
            trap_tier()
        ),
    );
    let err = Cascade::with_engine(common::engine(), &config)
        .await
        .err()
        .expect("refused")
        .to_string();
    assert!(err.contains("escalation.queue"), "{err}");
}

/// A served cascade whose admin endpoints need `token`.
async fn serve(dir: &Path, config: &str, token: &str) -> (Http, Arc<CascadeService>) {
    let path = write_config_dir(dir, config);
    let service = CascadeService::start(&path).await.expect("service starts");
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
async fn reviewers_list_and_resolve_over_http_behind_the_token_and_metrics_show_the_backlog() {
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        "[cascade]\nname = \"fraud\"\n{ABSTAIN}[escalation]\nqueue = \"q.db\"\nlabels = [\"fraud\", \"legit\"]\n{}",
        trap_tier()
    );
    let (anonymous, _service) = serve(dir.path(), &config, "s3cret").await;
    let admin = anonymous.with_bearer("s3cret");
    let mut ids = Vec::new();
    for i in 0..3 {
        let (status, answer) = anonymous.predict(&format!("h{i}")).await;
        assert_eq!(status, 200);
        assert_eq!(answer["escalation"]["status"], "recorded", "{answer}");
        ids.push(answer["escalation"]["id"].as_str().unwrap().to_string());
    }

    // Without the token: 401; with a wrong one: 403; on the queue and on /admin alike.
    for (client, expected) in [(&anonymous, 401), (&anonymous.with_bearer("wrong"), 403)] {
        assert_eq!(client.get("/v1/escalations").await.0, expected);
        assert_eq!(client.send("POST", "/admin/reload", "").await.0, expected);
        let resolve = format!("/v1/escalations/{}/resolve", ids[0]);
        let (status, _) = client.send("POST", &resolve, r#"{"label":"fraud"}"#).await;
        assert_eq!(status, expected);
    }
    // The page itself carries no data and needs no token.
    let (status, page) = anonymous.get("/review").await;
    assert_eq!(status, 200);
    assert!(page.contains("<html"), "{page}");

    let list = admin.get_json("/v1/escalations?status=pending").await;
    assert_eq!(list["pending"], 3);
    assert_eq!(list["labels"], json!(["fraud", "legit"]));
    let listed: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, ids, "pending items oldest first");
    let (_, raw) = admin.get("/v1/escalations").await;
    assert!(
        raw.find("\"amount\"") < raw.find("\"account_age_days\""),
        "features keep the caller's order in the list: {raw}"
    );
    assert_eq!(list["items"][0]["trail"][0]["reason"]["kind"], "trap");

    let resolve = |id: &str, body: &str| {
        let admin = admin.clone();
        let (id, body) = (id.to_string(), body.to_string());
        async move {
            admin
                .send("POST", &format!("/v1/escalations/{id}/resolve"), body)
                .await
        }
    };
    let (status, body) = resolve(&ids[0], r#"{"label":"other"}"#).await;
    assert_eq!(status, 400, "a label outside escalation.labels: {body}");
    let (status, body) = resolve(
        &ids[0],
        r#"{"label":"fraud","note":"stolen card","by":"ana"}"#,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let item: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(item["status"], "resolved");
    assert_eq!(item["resolution"]["label"], "fraud");
    assert_eq!(item["resolution"]["by"], "ana");
    let (status, body) = resolve(&ids[0], r#"{"label":"legit"}"#).await;
    assert_eq!(status, 409, "{body}");
    assert!(
        body.contains("ana"),
        "the first resolution is named: {body}"
    );
    assert_eq!(resolve("no-such-id", r#"{"label":"fraud"}"#).await.0, 404);
    assert_eq!(resolve(&ids[1], r#"{"lable":"fraud"}"#).await.0, 400);

    let shown = admin.get_json(&format!("/v1/escalations/{}", ids[0])).await;
    assert_eq!(shown["resolution"]["note"], "stolen card");
    let resolved = admin.get_json("/v1/escalations?status=resolved").await;
    assert_eq!(resolved["items"].as_array().unwrap().len(), 1);
    assert_eq!(admin.get("/v1/escalations?status=maybe").await.0, 400);

    // A batch's escalations are committed together, each with its own receipt.
    let batch = format!(
        r#"{{"requests":[{},{}]}}"#,
        common::request_json("b1"),
        common::request_json("b2")
    );
    let (status, body) = anonymous.send("POST", "/v1/predict/batch", batch).await;
    assert_eq!(status, 200, "{body}");
    let answers: Value = serde_json::from_str(&body).unwrap();
    for answer in answers["answers"].as_array().unwrap() {
        assert_eq!(answer["escalation"]["status"], "recorded", "{answer}");
        let id = answer["escalation"]["id"].as_str().unwrap();
        let item = admin.get_json(&format!("/v1/escalations/{id}")).await;
        assert_eq!(item["request_id"], answer["request_id"]);
    }

    let metric = |name: &str| {
        let http = anonymous.clone();
        let name = name.to_string();
        async move { http.metric(&name).await }
    };
    assert_eq!(
        metric("tierhost_escalations_total{cascade=\"fraud\"}").await,
        5.0
    );
    assert_eq!(
        metric("tierhost_escalations_pending{cascade=\"fraud\"}").await,
        4.0
    );
    wait_for("the oldest pending escalation to age", async || {
        (metric("tierhost_escalation_oldest_pending_seconds{cascade=\"fraud\"}").await > 0.0)
            .then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cascade_without_a_queue_says_so_on_the_review_api() {
    let dir = tempfile::tempdir().unwrap();
    let (http, _service) = serve(dir.path(), RULES_TIER, "t").await;
    let (status, body) = http.with_bearer("t").get("/v1/escalations").await;
    assert_eq!(status, 404);
    assert!(body.contains("[escalation]"), "{body}");
}
