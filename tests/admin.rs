//! Who may change the host: with `server.admin_listen` the admin endpoints are served on their
//! own listener only (absent from the public one), and with `server.admin_token_sha256` they
//! need the bearer token whose sha256 the config holds (401 without a token, 403 with a wrong
//! one). The real binary, over loopback.
use crate::common;

use common::http::{Http, Proc, free_port, serve_command};
use common::{RULES_FILE_TIER, request_json, wait_for, write_config_dir};

fn sha256_hex(text: &str) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(text.as_bytes()))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_routes_live_on_their_own_listener_behind_a_hashed_token() {
    let dir = tempfile::tempdir().unwrap();
    let admin_port = free_port();
    let config = format!(
        "[server]\nadmin_listen = \"127.0.0.1:{admin_port}\"\nadmin_token_sha256 = \"{}\"\n{RULES_FILE_TIER}",
        sha256_hex("s3cret")
    );
    let path = write_config_dir(dir.path(), &config);
    let port = free_port();
    let mut command = serve_command(&path, port);
    command.env_remove("TIERHOST_ADMIN_TOKEN");
    let mut proc = Proc::spawn(&mut command);
    let public = Http::local(port);
    let admin = Http::local(admin_port);
    wait_for("both listeners to answer", async || {
        if let Some(status) = proc.exited() {
            panic!("tierhost serve exited ({status})");
        }
        let up = |http: &Http| {
            let http = http.clone();
            async move { http.try_send("GET", "/review", "").await.map(|r| r.0) }
        };
        let public_up = matches!(public.try_send("GET", "/healthz", "").await, Ok((200, _)));
        (public_up && up(&admin).await == Ok(200)).then_some(())
    })
    .await;

    // The public listener serves predictions and has no admin route at all.
    let (status, _) = public.predict_with(request_json("p1")).await;
    assert_eq!(status, 200);
    for (method, path) in [
        ("POST", "/admin/reload"),
        ("POST", "/admin/tiers/rules/breaker"),
        ("POST", "/admin/tiers/rules/promote"),
        ("GET", "/v1/escalations"),
        ("GET", "/review"),
    ] {
        let (status, body) = public.with_bearer("s3cret").send(method, path, "").await;
        assert_eq!(
            status, 404,
            "{method} {path} on the public listener: {body}"
        );
    }
    // The admin listener: no prediction route; admin routes need the token.
    assert_eq!(
        admin
            .send("POST", "/v1/predict", request_json("a1"))
            .await
            .0,
        404
    );
    assert_eq!(admin.send("POST", "/admin/reload", "").await.0, 401);
    assert_eq!(
        admin
            .with_bearer("wrong")
            .send("POST", "/admin/reload", "")
            .await
            .0,
        403
    );
    let (status, body) = admin
        .with_bearer("s3cret")
        .send("POST", "/admin/reload", "")
        .await;
    assert_eq!(status, 200, "{body}");
    proc.kill();
}

#[test]
fn a_malformed_token_digest_or_a_shared_address_is_refused() {
    for (server, field) in [
        (
            "admin_token_sha256 = \"s3cret\"",
            "server.admin_token_sha256",
        ),
        (
            "listen = \"127.0.0.1:9000\"\nadmin_listen = \"127.0.0.1:9000\"",
            "server.admin_listen",
        ),
    ] {
        let toml = format!("[server]\n{server}\n{}", common::RULES_TIER);
        let err = tierhost::Config::parse(
            &toml,
            std::path::Path::new("c.toml"),
            std::path::Path::new("."),
        )
        .expect_err("refused")
        .to_string();
        assert!(err.contains(field), "{err}");
    }
}

/// A self-signed certificate for 127.0.0.1 named `cn`, written as `<name>.cert.pem` and
/// `<name>.key.pem` in `dir` (openssl, as an operator would make one).
fn self_signed(dir: &std::path::Path, name: &str, cn: &str) {
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "2", "-subj", &format!("/CN={cn}")])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(dir.join(format!("{name}.key.pem")))
        .arg("-out")
        .arg(dir.join(format!("{name}.cert.pem")))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("openssl (scripts/test.sh installs it)");
    assert!(status.success(), "openssl req failed");
}

/// `GET url` with curl trusting only `ca`: the body, or `None` when the request failed.
fn curl(url: &str, ca: &std::path::Path) -> Option<String> {
    let out = std::process::Command::new("curl")
        .args(["-sS", "--fail", "--max-time", "10", "--cacert"])
        .arg(ca)
        .arg(url)
        .output()
        .expect("curl (scripts/test.sh installs it)");
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_serves_https_and_picks_up_a_replaced_certificate() {
    let dir = tempfile::tempdir().unwrap();
    self_signed(dir.path(), "one", "tierhost-test-one");
    self_signed(dir.path(), "two", "tierhost-test-two");
    for part in ["cert", "key"] {
        std::fs::copy(
            dir.path().join(format!("one.{part}.pem")),
            dir.path().join(format!("live.{part}.pem")),
        )
        .unwrap();
    }
    let config = format!(
        "[server.tls]\ncert = \"live.cert.pem\"\nkey = \"live.key.pem\"\ncheck_s = 1\n{RULES_FILE_TIER}"
    );
    let path = write_config_dir(dir.path(), &config);
    let port = free_port();
    let mut proc = Proc::spawn(&mut serve_command(&path, port));
    let url = format!("https://127.0.0.1:{port}/healthz");
    let one = dir.path().join("one.cert.pem");
    let two = dir.path().join("two.cert.pem");
    wait_for("HTTPS with the first certificate", async || {
        if let Some(status) = proc.exited() {
            panic!("tierhost serve exited ({status})");
        }
        curl(&url, &one)
    })
    .await;
    assert!(
        curl(&url, &two).is_none(),
        "only the served certificate is trusted"
    );
    let plain = Http::local(port).try_send("GET", "/healthz", "").await;
    assert!(
        !matches!(plain, Ok((200, _))),
        "plain HTTP is not served: {plain:?}"
    );

    // Replace the pair (key first, as a deploy tool writing both would): the server picks
    // the new one up without a restart, and a moment with a mismatched pair changes nothing.
    for part in ["key", "cert"] {
        let tmp = dir.path().join(format!("new.{part}.pem"));
        std::fs::copy(dir.path().join(format!("two.{part}.pem")), &tmp).unwrap();
        std::fs::rename(&tmp, dir.path().join(format!("live.{part}.pem"))).unwrap();
    }
    wait_for("HTTPS with the replaced certificate", async || {
        curl(&url, &two)
    })
    .await;
    assert!(curl(&url, &one).is_none());
    assert!(proc.exited().is_none(), "the server kept running");
    proc.kill();
}
