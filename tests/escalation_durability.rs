//! The escalation queue survives SIGKILL. The real `tierhost serve` answers a burst of
//! concurrent requests that all escalate (the primary traps, the safe default abstains) and is
//! killed with SIGKILL in the middle of it, at a different point in each round, on one queue
//! file. Every escalation a client was told was recorded (a 200 answer with `"escalation":
//! {"status": "recorded"}` received before the kill) must be found when the server is started
//! again on that file: listed by the restarted server (`GET /v1/escalations`) and read from the
//! file itself, intact (SQLite's integrity check, every row decodes, each holding the request
//! and the answer it was acknowledged with). Requests whose connection died with the server
//! were never acknowledged; they may or may not be in the queue. Every step waits on what the
//! processes show, never on a fixed pause.
use crate::common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use common::http::{Http, Served};
use common::{PATIENCE, chaos_tier, request, request_json, write_config_dir};
use serde_json::Value;
use tierhost::escalation::{EscalationStore, Status};
use tokio::sync::Notify;

/// Concurrent clients, each sending its next request as soon as the last one is answered.
const CLIENTS: usize = 32;

/// The kill points: in round `i` the server is SIGKILLed once `KILL_AFTER[i]` recorded
/// escalations have been acknowledged in that round. Together they stay well under the 1,000
/// items one `GET /v1/escalations` lists, so the restarted server's listing is the whole queue.
const KILL_AFTER: [usize; 3] = [20, 150, 500];

/// Everything escalates. The request budget, the tier's deadline and the write timeout are far
/// above what a loaded machine needs, so every answer before the kill is a recorded escalation
/// of a trapped primary (anything else is a failure, not load).
fn config() -> String {
    format!(
        "[cascade]\nname = \"durability\"\nbudget_ms = 20000\n[server]\nwatch = false\n\
         [safe_default]\nabstain = \"escalated to human review\"\n\
         [escalation]\nqueue = \"queue.db\"\nwrite_timeout_ms = 60000\n{}",
        chaos_tier("primary", "trap", "deadline_ms = 10000")
    )
}

/// What the clients were told: per escalation id, the request id sent and the whole answer.
type Acknowledged = BTreeMap<String, (String, Value)>;

/// What the clients did: the request ids they sent, and the escalations acknowledged.
#[derive(Default)]
struct Round {
    sent: BTreeSet<String>,
    acknowledged: Acknowledged,
}

/// The admin endpoints' client: with the bearer token when this environment sets one (the
/// server started by the test inherits it).
fn admin(http: &Http) -> Http {
    match std::env::var("TIERHOST_ADMIN_TOKEN") {
        Ok(token) if !token.is_empty() => http.with_bearer(&token),
        _ => http.clone(),
    }
}

/// One client: predicts with unique request ids until a request fails (the server is gone),
/// recording each acknowledged escalation; wakes `reached` at the round's kill point.
async fn client(
    http: Http,
    name: String,
    round: Arc<Mutex<Round>>,
    count: Arc<AtomicUsize>,
    kill_after: usize,
    reached: Arc<Notify>,
) {
    for i in 0.. {
        let request_id = format!("{name}-{i}");
        round.lock().unwrap().sent.insert(request_id.clone());
        let Ok((status, text)) = http
            .try_send("POST", "/v1/predict", request_json(&request_id))
            .await
        else {
            // Killed while this request was in flight (or before it was sent): never
            // acknowledged.
            return;
        };
        assert_eq!(status, 200, "{request_id}: {text}");
        let answer: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(answer["request_id"], request_id.as_str(), "{answer}");
        assert_eq!(answer["escalation"]["status"], "recorded", "{answer}");
        let id = answer["escalation"]["id"].as_str().unwrap().to_string();
        let previous = round
            .lock()
            .unwrap()
            .acknowledged
            .insert(id.clone(), (request_id, answer));
        assert!(previous.is_none(), "escalation id {id} given twice");
        if count.fetch_add(1, Ordering::SeqCst) + 1 == kill_after {
            reached.notify_one();
        }
    }
}

/// Runs `CLIENTS` clients against `server` and SIGKILLs it once `kill_after` escalations have
/// been acknowledged; returns the requests sent and the escalations acknowledged before it died.
async fn burst_then_kill(server: Served, round: usize, kill_after: usize) -> Round {
    let Served { proc, http } = server;
    let seen = Arc::new(Mutex::new(Round::default()));
    let count = Arc::new(AtomicUsize::new(0));
    let reached = Arc::new(Notify::new());
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            tokio::spawn(client(
                Http::new(http.base.clone()),
                format!("round{round}-client{c}"),
                seen.clone(),
                count.clone(),
                kill_after,
                reached.clone(),
            ))
        })
        .collect();
    if tokio::time::timeout(PATIENCE, reached.notified())
        .await
        .is_err()
    {
        panic!(
            "round {round}: waited {PATIENCE:?} for {kill_after} recorded escalations, got {}",
            count.load(Ordering::SeqCst)
        );
    }
    let at_kill = count.load(Ordering::SeqCst);
    tokio::task::spawn_blocking(move || proc.kill())
        .await
        .unwrap();
    for client in clients {
        tokio::time::timeout(PATIENCE, client)
            .await
            .expect("a client stops once the server is gone")
            .expect("the client's checks hold");
    }
    let seen = std::mem::take(&mut *seen.lock().unwrap());
    assert!(seen.acknowledged.len() >= at_kill && at_kill >= kill_after);
    eprintln!(
        "round {round}: SIGKILL sent after {at_kill} acknowledged escalations; {} acknowledged \
         before the server died, {} requests sent",
        seen.acknowledged.len(),
        seen.sent.len()
    );
    seen
}

/// The features as the standard request sends them, in its order, as JSON.
fn sent_features() -> Vec<(String, Value)> {
    request("any")
        .features
        .iter()
        .map(|(name, value)| (name.clone(), serde_json::to_value(value).unwrap()))
        .collect()
}

/// Every acknowledged escalation is in the queue (listed by the restarted `server` and read
/// from `queue`), the file passes SQLite's integrity check, and every row decodes into the
/// request and answer it was recorded with (or, never acknowledged, a request that was sent).
async fn check_queue(server: &Served, queue: &Path, seen: &Round) {
    let acknowledged = &seen.acknowledged;
    let listing = admin(&server.http)
        .get_json("/v1/escalations?status=all&limit=1000")
        .await;
    let listed: BTreeSet<&str> = listing["items"]
        .as_array()
        .expect("items")
        .iter()
        .map(|item| item["id"].as_str().expect("an id"))
        .collect();
    assert!(
        listed.len() < 1000,
        "the listing is capped at 1000 items: it may not be the whole queue"
    );
    assert_eq!(listing["pending"], listed.len(), "nothing was resolved");
    let lost: Vec<&String> = acknowledged
        .keys()
        .filter(|id| !listed.contains(id.as_str()))
        .collect();
    assert!(
        lost.is_empty(),
        "{} of {} acknowledged escalations are not listed by the restarted server, e.g. {:?}",
        lost.len(),
        acknowledged.len(),
        &lost[..lost.len().min(5)]
    );

    let store = EscalationStore::open(queue).expect("the queue opens");
    store.integrity_check().expect("integrity check");
    let items = store
        .list(None, usize::MAX)
        .expect("every row of the queue decodes");
    let stored: BTreeSet<&str> = items.iter().map(|i| i.id.as_str()).collect();
    assert_eq!(stored, listed, "the server lists the file's items");
    assert!(items.len() >= acknowledged.len());
    let request_ids: BTreeSet<&str> = items.iter().map(|i| i.request_id.as_str()).collect();
    assert_eq!(request_ids.len(), items.len(), "one item per request");
    let features = sent_features();
    for item in &items {
        assert_eq!(item.status, Status::Pending, "{}", item.id);
        assert!(item.resolution.is_none());
        assert_eq!(item.cascade, "durability");
        assert_eq!(item.served_by, tierhost::SAFE_DEFAULT);
        assert_eq!(item.decision["outcome"], "abstain", "{}", item.decision);
        let stored_features: Vec<(String, Value)> = item.features.0.clone();
        assert_eq!(stored_features, features, "{}", item.id);
        let trail = item.trail.as_array().expect("the trail is a list");
        assert_eq!(trail.len(), 1, "{}", item.trail);
        assert_eq!(
            (&trail[0]["tier"], &trail[0]["reason"]["kind"]),
            (&Value::from("primary"), &Value::from("trap")),
            "{}",
            item.trail
        );
        match acknowledged.get(&item.id) {
            Some((request_id, answer)) => {
                assert_eq!(&item.request_id, request_id);
                assert_eq!(item.decision, answer["decision"]);
                assert_eq!(item.trail, answer["trail"]);
                assert_eq!(
                    item.served_by,
                    answer["served_by"]["tier"].as_str().unwrap()
                );
            }
            // Committed, and the server died before the answer reached its client.
            None => assert!(
                seen.sent.contains(&item.request_id),
                "{}: a request nobody sent",
                item.request_id
            ),
        }
    }
    eprintln!(
        "queue after the restart: {} items, {} acknowledged, {} committed but not acknowledged",
        items.len(),
        acknowledged.len(),
        items.len() - acknowledged.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_burst_loses_no_acknowledged_escalation() {
    let dir = tempfile::tempdir().unwrap();
    let path = write_config_dir(dir.path(), &config());
    let queue = dir.path().join("queue.db");
    let mut seen = Round::default();
    let mut server = Served::start(&path).await;
    for (round, kill_after) in KILL_AFTER.into_iter().enumerate() {
        let this_round = burst_then_kill(server, round, kill_after).await;
        seen.sent.extend(this_round.sent);
        seen.acknowledged.extend(this_round.acknowledged);
        // The next round runs on the server that found the queue intact.
        server = Served::start(&path).await;
        check_queue(&server, &queue, &seen).await;
    }
}
