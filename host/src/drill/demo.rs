//! `tierhost demo`: the smallest fire drill. The fraud cascade of `examples/fraud` (embedded,
//! so the demo needs no files) answers its sample requests healthy, then with its primary tier
//! replaced by a tier stuck in `loop {}`; the table shows who served each request and the
//! trail of every step down.
use std::fmt::Write as _;
use std::path::Path;

use crate::answer::{Answer, Decision};
use crate::cascade::{Cascade, SAFE_DEFAULT};
use crate::config::Config;
use crate::drill::{DrillError, parse_requests};

const CONFIG_PATH: &str = "examples/fraud/cascade.toml";
const CONFIG: &str = include_str!("../../../examples/fraud/cascade.toml");
const REQUESTS_PATH: &str = "examples/fraud/requests.jsonl";
const REQUESTS: &str = include_str!("../../../examples/fraud/requests.jsonl");

/// The demo: the cascade, then each of its runs.
#[derive(Debug, Clone)]
pub struct Demo {
    /// The cascade's name.
    pub cascade: String,
    /// Its tiers, in order.
    pub tiers: Vec<String>,
    /// The healthy run, then the run with the looping primary.
    pub runs: Vec<DemoRun>,
}

/// One run of the demo.
#[derive(Debug, Clone)]
pub struct DemoRun {
    /// What the cascade is like in this run.
    pub title: &'static str,
    /// One answer per sample request, in order.
    pub answers: Vec<Answer>,
}

/// Runs the demo: every sample request through the healthy cascade, then through a copy whose
/// primary is `builtin:chaos` in mode `infinite-loop`.
pub async fn demo() -> Result<Demo, DrillError> {
    let healthy = Config::parse(CONFIG, Path::new(CONFIG_PATH), Path::new("."))?;
    let requests = parse_requests(REQUESTS, Path::new(REQUESTS_PATH))?;
    let mut broken = healthy.clone();
    if let Some(primary) = broken.tiers.first_mut() {
        primary.plugin = "builtin:chaos".into();
        primary.params = toml::toml! { mode = "infinite-loop" };
    }
    let mut runs = Vec::new();
    for (title, config) in [
        ("healthy cascade", &healthy),
        (
            "primary replaced by a tier stuck in an infinite loop (builtin:chaos)",
            &broken,
        ),
    ] {
        let cascade = Cascade::load(config).await?;
        let mut answers = Vec::with_capacity(requests.len());
        for request in &requests {
            answers.push(cascade.predict(request).await);
        }
        runs.push(DemoRun { title, answers });
    }
    Ok(Demo {
        cascade: healthy.cascade.name.clone(),
        tiers: healthy.tiers.iter().map(|t| t.name.clone()).collect(),
        runs,
    })
}

impl Demo {
    /// The demo as tables: one per run, a row per request (who served it, the label and
    /// confidence, whether it was degraded, the time and the trail).
    pub fn render(&self) -> String {
        let mut out = format!(
            "tierhost demo: cascade \"{}\": {} -> {SAFE_DEFAULT}\n\n",
            self.cascade,
            self.tiers.join(" -> ")
        );
        for run in &self.runs {
            let _ = writeln!(
                out,
                "== {}\n{:<20} {:<12} {:<7} {:>5} {:>9} {:>8}  trail",
                run.title, "request", "served by", "label", "conf", "degraded", "time"
            );
            for answer in &run.answers {
                out.push_str(&row(answer));
            }
            out.push('\n');
        }
        out.push_str(
            "Each answer's full provenance: tierhost demo --json, or tierhost run --config \
             examples/fraud/cascade.toml --input examples/fraud/request.json\n",
        );
        out
    }
}

/// One answer as a table row.
fn row(answer: &Answer) -> String {
    let (label, confidence) = match &answer.decision {
        Decision::Answer {
            label, confidence, ..
        } => (label.as_str(), format!("{confidence:.2}")),
        Decision::Abstain { .. } => ("abstain", "-".into()),
    };
    let trail: Vec<String> = answer
        .trail
        .iter()
        .map(|e| match &e.reason {
            Some(r) => format!("{}:{}", e.tier, r.kind()),
            None => format!("{}:served", e.tier),
        })
        .collect();
    format!(
        "{:<20} {:<12} {:<7} {:>5} {:>9} {:>6}us  {}\n",
        answer.request_id,
        answer.served_by.tier,
        label,
        confidence,
        if answer.degraded { "yes" } else { "no" },
        answer.elapsed_us,
        trail.join(" > ")
    )
}
