//! Remote-model tier cost, side by side in one run: a KServe V2 model server in this process
//! (axum on loopback, the fraud logistic model of `tests/fixtures/model_server.py`, so the
//! server itself costs a few microseconds and the client side shows), asked
//!
//! - natively: a pooled hyper client POSTing the same V2 JSON and parsing the probability out of
//!   the response, what a service calling its model server directly does;
//! - through tierhost: a one-tier cascade of `builtin:kserve` granted `[tier.http]`, a fresh
//!   instance per call and a reused one (the same request body, the same server).
//!
//! Run: `cargo bench --bench remote` (add `-- --smoke` for a quick check that it works, or
//! `-- --iterations N`).
use std::hint::black_box;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Instant;

use axum::Json;
use axum::routing::post;
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use serde_json::{Value, json};
use tierhost::{Cascade, Config, Decision, EngineConfig, Request, TierEngine};

mod machine;
mod support;
mod timing;

use timing::{stats, us};

/// The fraud model of the test fixture: p = sigmoid(0.004 amount - 2 trusted + 0.8 new - 3).
async fn infer(Json(body): Json<Value>) -> Json<Value> {
    let data: Vec<f64> = body["inputs"][0]["data"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_f64).collect())
        .unwrap_or_default();
    let z = match data[..] {
        [amount, trusted, new] => 0.004 * amount - 2.0 * trusted + 0.8 * new - 3.0,
        _ => 0.0,
    };
    let p = 1.0 / (1.0 + (-z).exp());
    Json(json!({
        "model_name": "fraud",
        "id": body["id"],
        "outputs": [{"name": "probability", "shape": [1, 1], "datatype": "FP64", "data": [p]}],
    }))
}

fn main() {
    let smoke = support::flag("--smoke");
    let (warmup, default_iterations) = if smoke { (20, 200) } else { (1_000, 20_000) };
    let iterations = support::arg("--iterations").unwrap_or(default_iterations);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route("/v2/models/fraud/infer", post(infer));
        tokio::spawn(async move { axum::serve(listener, app).await });
        let url = format!("http://{addr}/v2/models/fraud/infer");
        let request_body = json!({
            "id": "bench",
            "inputs": [{"name": "input", "shape": [1, 3], "datatype": "FP64", "data": [900.0, 0.0, 1.0]}],
        })
        .to_string();

        // Native: pooled client, POST, parse the probability.
        let client: Client<_, Full<Bytes>> =
            Client::builder(TokioExecutor::new()).build_http();
        let mut native = Vec::with_capacity(iterations);
        let mut native_p = 0.0;
        for i in 0..warmup + iterations {
            let t = Instant::now();
            let request = hyper::Request::post(&url)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(request_body.clone())))
                .expect("request");
            let response = client.request(request).await.expect("response");
            let body = response.into_body().collect().await.expect("body").to_bytes();
            let doc: Value = serde_json::from_slice(&body).expect("json");
            native_p = black_box(doc["outputs"][0]["data"][0].as_f64().expect("p"));
            if i >= warmup {
                native.push(t.elapsed());
            }
        }
        let native = stats(native);

        let engine = TierEngine::new(&EngineConfig::default(), Path::new(".")).expect("engine");
        let req = Request::from_json(
            r#"{"id":"bench","features":{"amount":900,"trusted_device":false,"new_account":true}}"#,
        )
        .expect("request");
        let measure = |instances: &'static str| {
            let toml = format!(
                "[[tier]]\nname = \"remote\"\nplugin = \"builtin:kserve\"\n{instances}\
                 [tier.limits]\ndeadline_ms = 1000\n\
                 [tier.params]\nurl = \"{url}\"\nfeatures = \"amount,trusted_device,new_account\"\n\
                 [tier.http]\nallow = [\"http://{addr}/v2/models/fraud\"]\n"
            );
            let engine = engine.clone();
            let req = req.clone();
            async move {
                let config = Config::parse(&toml, Path::new("bench.toml"), Path::new("."))
                    .expect("config");
                let cascade = Cascade::with_engine(engine, &config).await.expect("loads");
                let mut samples = Vec::with_capacity(iterations);
                let mut score = 0.0;
                for i in 0..warmup + iterations {
                    let t = Instant::now();
                    let answer = cascade.predict(black_box(&req)).await;
                    let elapsed = t.elapsed();
                    assert_eq!(answer.served_by.tier, "remote", "{:?}", answer.trail);
                    if let Decision::Answer { score: s, .. } = answer.decision {
                        score = s;
                    }
                    if i >= warmup {
                        samples.push(elapsed);
                    }
                }
                (stats(samples), score)
            }
        };
        let (fresh, fresh_p) = measure("").await;
        let (reused, reused_p) = measure("instances = \"reuse\"\nwarm_instances = 2\n").await;
        assert!(
            (fresh_p - native_p).abs() < 1e-12 && (reused_p - native_p).abs() < 1e-12,
            "the tier and the native client read the same probability"
        );

        println!(
            "tierhost remote-tier benchmark ({iterations} requests each after {warmup} warm-up; \
             model server in process on loopback; {})\n",
            machine::describe()
        );
        println!("| path | p50 (us) | p99 (us) | mean (us) | p50 vs native |");
        println!("|---|---:|---:|---:|---:|");
        for (name, s) in [
            ("native: pooled hyper client, POST + parse", &native),
            ("builtin:kserve tier, fresh instance per call", &fresh),
            ("builtin:kserve tier, reused instance", &reused),
        ] {
            println!(
                "| {name} | {} | {} | {} | {:.2}x |",
                us(s.p50),
                us(s.p99),
                us(s.mean),
                s.p50.as_secs_f64() / native.p50.as_secs_f64()
            );
        }
    });
}
