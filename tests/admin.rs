//! Who may change the host: with `server.admin_listen` the admin endpoints are served on their
//! own listener only (absent from the public one), and with `server.admin_token_sha256` they
//! need the bearer token whose sha256 the config holds (401 without a token, 403 with a wrong
//! one). The real binary, over loopback.
mod common;

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
        .err()
        .expect("refused")
        .to_string();
        assert!(err.contains(field), "{err}");
    }
}
