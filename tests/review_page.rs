//! The analysts' review page (`GET /review`) in a real browser: headless Chromium driven
//! through chromedriver (WebDriver, `fantoccini`) against a real `tierhost serve` whose cascade
//! escalates every request (both tiers trap, the safe default abstains) into a SQLite queue,
//! with an admin token set. The page asks for the token after its first 401, lists the pending
//! escalations oldest first, and an analyst resolves one with a label, a note and their name;
//! the HTTP API then shows the item resolved with exactly those. A screenshot of the page goes
//! to `target/review-page.png`. Every step waits on what the browser or the server shows, never
//! on a fixed pause.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`/usr/bin/chromium`, `/usr/bin/chromedriver`),
//! which `scripts/test.sh` installs; without them the test fails, it does not skip.
use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::http::{Http, Proc, free_port, serve_command};
use common::{PATIENCE, chaos_tier, wait_for};
use fantoccini::{Client, ClientBuilder, Locator};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use rustix::process::{Pid, Signal, kill_process_group};
use serde_json::{Value, json};

const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
const CHROMIUM: &str = "/usr/bin/chromium";
const TOKEN: &str = "review-test-token-5f2c";
const REVIEWER: &str = "Ana Analyst";
const NOTE: &str = "lookalike login form posting to an IP address";
const REQUESTS: usize = 5;

/// Flags for Chromium on this kind of machine (no network, running as root, no GPU).
const CHROMIUM_FLAGS: [&str; 8] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

/// Where the screenshot goes: `target/review-page.png` (beside `CARGO_TARGET_TMPDIR`).
fn screenshot_path() -> PathBuf {
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("review-page.png")
}

/// chromedriver in its own process group, with the Chromium it starts. Chromium outlives a
/// chromedriver that is merely sent SIGTERM, so on drop the whole group gets SIGTERM, then
/// SIGKILL once chromedriver has exited (or after a bounded wait). Owns the browser's profile
/// directory, removed after the browser is gone.
struct Chromedriver {
    child: Option<Child>,
    pid: u32,
    port: u16,
    _profile: tempfile::TempDir,
    profile_path: PathBuf,
}

impl Chromedriver {
    /// Starts chromedriver on a free port and waits until its `/status` says it is ready.
    async fn start() -> Self {
        assert!(
            Path::new(CHROMEDRIVER).exists() && Path::new(CHROMIUM).exists(),
            "{CHROMEDRIVER} or {CHROMIUM} is missing: this test drives Debian's Chromium; \
             scripts/test.sh installs the packages `chromium` and `chromium-driver` \
             (apt-get install chromium chromium-driver)"
        );
        let port = free_port();
        let profile = tempfile::tempdir().unwrap();
        let profile_path = profile.path().to_path_buf();
        // Kept after the run (overwritten by the next) for a failure's post-mortem.
        let log = Path::new(env!("CARGO_TARGET_TMPDIR")).join("review-page-chromedriver.log");
        let child = {
            use std::os::unix::process::CommandExt;
            Command::new(CHROMEDRIVER)
                .arg(format!("--port={port}"))
                .arg(format!("--log-path={}", log.display()))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .process_group(0)
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start {CHROMEDRIVER}: {e}"))
        };
        let mut driver = Self {
            pid: child.id(),
            child: Some(child),
            port,
            _profile: profile,
            profile_path,
        };
        let status = Http::local(port);
        wait_for("chromedriver to answer /status as ready", async || {
            if let Some(exit) = driver
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok().flatten())
            {
                panic!(
                    "chromedriver exited ({exit}) before it was ready; log: {}",
                    log.display()
                );
            }
            let (code, body) = status.try_send("GET", "/status", "").await.ok()?;
            let ready = serde_json::from_str::<Value>(&body).ok()?["value"]["ready"] == true;
            (code == 200 && ready).then_some(())
        })
        .await;
        driver
    }

    /// A WebDriver session in a new headless Chromium (fresh profile, 1280x900).
    async fn browser(&self) -> Client {
        let mut args: Vec<String> = CHROMIUM_FLAGS.iter().map(|f| f.to_string()).collect();
        args.push(format!("--user-data-dir={}", self.profile_path.display()));
        args.push("--window-size=1280,900".into());
        let capabilities = json!({
            "goog:chromeOptions": { "binary": CHROMIUM, "args": args }
        });
        let Value::Object(capabilities) = capabilities else {
            unreachable!()
        };
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|e| panic!("chromedriver did not start a Chromium session: {e}"))
    }
}

impl Drop for Chromedriver {
    fn drop(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let group = Pid::from_raw(self.pid as i32).expect("a child's pid is positive");
        let _ = kill_process_group(group, Signal::TERM);
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let _ = tx.send(child.wait());
        });
        let _ = rx.recv_timeout(Duration::from_secs(10));
        // Whatever of the group is left (a browser process slow to exit).
        let _ = kill_process_group(group, Signal::KILL);
    }
}

/// `tierhost serve` over a cascade that escalates everything, with the admin token set.
async fn serve(dir: &Path) -> (Proc, Http) {
    let config = format!(
        "[cascade]\nname = \"phishing\"\nbudget_ms = 20000\n\
         [server]\nwatch = false\n\
         [safe_default]\nabstain = \"escalated to human review\"\n\
         [escalation]\nqueue = \"queue.db\"\nlabels = [\"phishing\", \"legitimate\"]\n\
         {}{}",
        chaos_tier("primary", "trap", ""),
        chaos_tier("small-model", "trap", ""),
    );
    let path = dir.join("cascade.toml");
    std::fs::write(&path, config).unwrap();
    let port = free_port();
    let mut proc = Proc::spawn(serve_command(&path, port).env("TIERHOST_ADMIN_TOKEN", TOKEN));
    let http = Http::local(port);
    wait_for("tierhost serve to answer /healthz", async || {
        if let Some(status) = proc.exited() {
            panic!("tierhost serve exited ({status}) before it was healthy");
        }
        matches!(http.try_send("GET", "/healthz", "").await, Ok((200, _))).then_some(())
    })
    .await;
    (proc, http)
}

/// `method path` with the admin token; status and body as JSON (a non-JSON body as a string).
async fn admin(http: &Http, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let mut request = hyper::Request::builder()
        .method(method)
        .uri(format!("{}{path}", http.base))
        .header("authorization", format!("Bearer {TOKEN}"));
    if body.is_some() {
        request = request.header("content-type", "application/json");
    }
    let body = body.map(|b| b.to_string()).unwrap_or_default();
    let response = http
        .client
        .request(request.body(Full::new(Bytes::from(body))).unwrap())
        .await
        .unwrap_or_else(|e| panic!("{method} {path}: {e}"));
    let status = response.status().as_u16();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    let text = String::from_utf8_lossy(&bytes).into_owned();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// The first `n` rows of the phishing example's test split as requests (features as numbers,
/// the label column left out).
fn phishing_requests(n: usize) -> Vec<Value> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/phishing/data/test.csv");
    let text = std::fs::read_to_string(&path)
        .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    let mut lines = text.lines();
    let header: Vec<&str> = lines.next().expect("a header").split(',').collect();
    lines
        .take(n)
        .enumerate()
        .map(|(i, line)| {
            let mut features = serde_json::Map::new();
            for (name, cell) in header.iter().zip(line.split(',')) {
                if *name == "label" {
                    continue;
                }
                let value: Value = serde_json::from_str(cell.trim()).unwrap_or_else(|e| {
                    panic!("{}: `{cell}` is not a number: {e}", path.display())
                });
                assert!(value.is_number(), "{name} = {cell}");
                features.insert(name.to_string(), value);
            }
            json!({ "id": format!("review-{}", i + 1), "features": features })
        })
        .collect()
}

/// The `data-escalation-id`s of the pending items on the page, in page order.
async fn pending_ids(browser: &Client) -> Vec<String> {
    let mut ids = Vec::new();
    for item in browser
        .find_all(Locator::Css("[data-escalation-id]"))
        .await
        .unwrap()
    {
        // An item removed between the two calls is simply not listed.
        if let Ok(Some(id)) = item.attr("data-escalation-id").await {
            ids.push(id);
        }
    }
    ids
}

/// A feature value a caller could send: HTML that would change the page title if rendered.
const HOSTILE: &str = "<img src=x onerror=\"document.title='pwned'\">";

async fn text_of(browser: &Client, id: &str) -> String {
    match browser.find(Locator::Id(id)).await {
        Ok(element) => element.text().await.unwrap_or_default(),
        Err(_) => String::new(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn analyst_resolves_an_escalation_on_the_review_page() {
    let driver = Chromedriver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let (_server, http) = serve(dir.path()).await;

    // Five real rows, each escalated: abstained by the safe default and recorded in the queue.
    // The last one also carries caller-controlled text that is HTML: the page must show it as
    // text, never run it.
    let mut requests = phishing_requests(REQUESTS);
    requests[REQUESTS - 1]["features"]["pasted_note"] = json!(HOSTILE);
    let mut escalated = Vec::new();
    for request in requests {
        let (status, answer) = http.predict_with(request.to_string()).await;
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["decision"]["outcome"], "abstain", "{answer}");
        assert_eq!(answer["escalation"]["status"], "recorded", "{answer}");
        let id = answer["escalation"]["id"]
            .as_str()
            .expect("an escalation id");
        escalated.push(id.to_string());
    }

    // The API wants the token; the page itself does not.
    let (status, body) = http.get("/v1/escalations?status=pending").await;
    assert_eq!(status, 401, "{body}");
    let (status, page) = http.get("/review").await;
    assert_eq!(status, 200);
    assert!(page.contains("data-escalation-id"), "not the review page");
    let (status, before) = admin(&http, "GET", "/v1/escalations?status=pending", None).await;
    assert_eq!(status, 200, "{before}");
    let pending_before = before["pending"].as_u64().expect("a pending count");
    assert_eq!(pending_before, REQUESTS as u64, "{before}");

    let browser = driver.browser().await;
    let wait = || {
        browser
            .wait()
            .at_most(PATIENCE)
            .every(Duration::from_millis(50))
    };
    browser
        .goto(&format!("{}/review", http.base))
        .await
        .unwrap();

    // The first API call got a 401: the page asks for the token.
    let token = wait()
        .for_element(Locator::Css("#auth:not(.hidden) #token"))
        .await
        .expect("the page asks for the token after a 401");
    token.send_keys(TOKEN).await.unwrap();
    browser
        .find(Locator::Id("token-save"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    browser
        .find(Locator::Id("reviewer"))
        .await
        .unwrap()
        .send_keys(REVIEWER)
        .await
        .unwrap();

    // The pending items appear, oldest first: the order they were escalated in.
    wait()
        .for_element(Locator::Css("[data-escalation-id]"))
        .await
        .expect("pending items on the page");
    wait_for("all the pending items on the page", async || {
        (pending_ids(&browser).await.len() == REQUESTS).then_some(())
    })
    .await;
    assert_eq!(pending_ids(&browser).await, escalated);
    let hostile = browser
        .find(Locator::Css(&format!(
            "[data-escalation-id=\"{}\"]",
            escalated[REQUESTS - 1]
        )))
        .await
        .unwrap();
    assert!(
        hostile.text().await.unwrap().contains("<img src=x"),
        "the HTML in a feature is shown as text"
    );
    assert!(
        browser
            .find_all(Locator::Css("[data-escalation-id] img"))
            .await
            .unwrap()
            .is_empty(),
        "a feature's HTML became an element"
    );
    assert_ne!(browser.title().await.unwrap(), "pwned");
    assert_eq!(
        text_of(&browser, "pending-count").await,
        pending_before.to_string()
    );
    let page_text = browser
        .find(Locator::Css("[data-escalation-id]"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for shown in [
        "review-1",
        "empty_server_form_handler",
        "trap",
        "escalated to human review",
    ] {
        assert!(
            page_text.contains(shown),
            "`{shown}` not on the item: {page_text}"
        );
    }

    // Resolve the oldest: choose the label, write a note, Resolve.
    let id = escalated[0].clone();
    let item = format!("[data-escalation-id=\"{id}\"]");
    let phishing = browser
        .find(Locator::Css(&format!(
            "{item} button[data-label=\"phishing\"]"
        )))
        .await
        .unwrap();
    phishing.click().await.unwrap();
    assert_eq!(
        phishing.attr("aria-pressed").await.unwrap().as_deref(),
        Some("true")
    );
    browser
        .find(Locator::Css(&format!("{item} textarea.note")))
        .await
        .unwrap()
        .send_keys(NOTE)
        .await
        .unwrap();
    browser
        .find(Locator::Css(&format!("{item} button.resolve")))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();

    let confirmation = format!("Resolved {id} as phishing");
    wait_for("the status line to confirm the resolution", async || {
        let status = text_of(&browser, "status").await;
        assert!(
            !status.starts_with("Could not"),
            "the page reported an error: {status}"
        );
        status.contains(&confirmation).then_some(())
    })
    .await;
    let remaining = REQUESTS - 1;
    wait_for("the resolved item to leave the pending list", async || {
        let ids = pending_ids(&browser).await;
        (ids.len() == remaining
            && !ids.contains(&id)
            && text_of(&browser, "pending-count").await == remaining.to_string())
        .then_some(())
    })
    .await;

    // The screenshot for the README: the queue with its pending items and the confirmation.
    let png = browser.screenshot().await.expect("a screenshot");
    assert!(png.starts_with(b"\x89PNG"), "not a PNG");
    let shot = screenshot_path();
    std::fs::write(&shot, &png).unwrap_or_else(|e| panic!("writing {}: {e}", shot.display()));
    eprintln!("review page screenshot: {}", shot.display());

    // The API agrees: resolved with the label, the note and the reviewer's name.
    let (status, resolved) = admin(&http, "GET", &format!("/v1/escalations/{id}"), None).await;
    assert_eq!(status, 200, "{resolved}");
    assert_eq!(resolved["status"], "resolved", "{resolved}");
    assert_eq!(resolved["resolution"]["label"], "phishing", "{resolved}");
    assert_eq!(resolved["resolution"]["note"], NOTE, "{resolved}");
    assert_eq!(resolved["resolution"]["by"], REVIEWER, "{resolved}");
    let (status, after) = admin(&http, "GET", "/v1/escalations?status=pending", None).await;
    assert_eq!(status, 200, "{after}");
    assert_eq!(
        after["pending"].as_u64(),
        Some(pending_before - 1),
        "{after}"
    );
    let listed: Vec<&str> = after["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["id"].as_str())
        .collect();
    assert_eq!(listed, escalated[1..], "{after}");

    // The Resolved tab shows who resolved it, as what, with the note.
    browser
        .find(Locator::Id("tab-resolved"))
        .await
        .unwrap()
        .click()
        .await
        .unwrap();
    let card = wait()
        .for_element(Locator::Css(&format!("[data-resolved-id=\"{id}\"]")))
        .await
        .expect("the item in the Resolved tab");
    let card = card.text().await.unwrap();
    for shown in ["phishing", REVIEWER, NOTE] {
        assert!(
            card.contains(shown),
            "`{shown}` not in the resolved item: {card}"
        );
    }

    browser.close().await.expect("the browser session closes");
}
