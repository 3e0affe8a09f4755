//! The `tierhost` command line: check a cascade config, answer one request, serve, evaluate,
//! calibrate, run fire drills, run the demo. The work lives in the library; this is argument
//! parsing and printing.
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tierhost::{Answer, Cascade, Config, Decision, Request};

/// The demo cascade and its requests, embedded so `tierhost demo` needs no files.
const DEMO_CONFIG: &str = include_str!("../../examples/fraud/cascade.toml");
const DEMO_REQUESTS: &str = include_str!("../../examples/fraud/requests.jsonl");

#[derive(Parser)]
#[command(
    name = "tierhost",
    version,
    about = "Answer inference requests through a cascade of sandboxed wasm fallback tiers"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Load and validate a cascade config and every tier it names; exit 1 on any problem.
    Check {
        /// Cascade config (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Answer one request and print the answer with its trail as JSON.
    Run {
        /// Cascade config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Request JSON file (`-` for stdin): {"id": "...", "features": {...}}.
        #[arg(long)]
        input: PathBuf,
    },
    /// Serve the cascade over HTTP (predict, tiers, health, metrics, OpenAPI, admin reload).
    Serve {
        /// Cascade config (TOML).
        #[arg(long)]
        config: PathBuf,
        /// Address to listen on (default: `[server] listen`, 127.0.0.1:8080).
        #[arg(long)]
        listen: Option<String>,
    },
    /// Replay labeled rows (CSV) through the cascade under fault scenarios and report, per
    /// scenario, accuracy, coverage, fallbacks and the tier mix; each tier alone is a baseline.
    Eval(EvalArgs),
    /// Fire drill: inject each fault kind (loop, memory bomb, trap, stack overflow, hang, NaN,
    /// oversized output, abstain, load failure) into each tier of a copy of the cascade and
    /// check that every sample request is still answered within the budget with the right
    /// reason; prints a tier × fault matrix and exits 1 on any gap.
    Drill(DrillArgs),
    /// Choose each model tier's `min_confidence` so that the accuracy of the answers it keeps
    /// reaches a target on labeled validation data; prints the thresholds as TOML lines.
    Calibrate(CalibrateArgs),
    /// Run the embedded fraud cascade (examples/fraud) on sample requests, healthy and with its
    /// primary tier replaced by a tier stuck in an infinite loop.
    Demo {
        /// Print every answer as one JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Internal: compile one plugin under the engine's compile limits (run by the host as a
    /// child process, so a pathological component cannot hold `check` or a reload).
    #[command(hide = true)]
    CompileComponent {
        /// The engine settings, as JSON.
        #[arg(long)]
        engine: String,
        /// The component to compile.
        #[arg(long)]
        input: PathBuf,
        /// Where to write the compiled artifact.
        #[arg(long)]
        output: PathBuf,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Command::CompileComponent {
        engine,
        input,
        output,
    } = &cli.command
    {
        let code = tierhost::compile_component_main(engine, input, output);
        return ExitCode::from(u8::try_from(code).unwrap_or(2));
    }
    let default_filter = match cli.command {
        Command::Check { .. } | Command::Serve { .. } => "info",
        Command::Run { .. } => "warn",
        Command::Demo { .. } | Command::Eval(_) | Command::Calibrate(_) => "error",
        // Every injected load failure logs an error by design; the matrix reports them.
        Command::Drill(_) => "off",
        Command::CompileComponent { .. } => "off",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_filter)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Check { config } => check(&config).await,
            Command::Run { config, input } => run(&config, &input).await,
            Command::Demo { json } => demo(json).await,
            Command::Serve { config, listen } => serve(&config, listen).await,
            Command::Calibrate(args) => calibrate(args).await,
            Command::Eval(args) => eval(args).await,
            Command::Drill(args) => drill(args).await,
            Command::CompileComponent { .. } => Ok(ExitCode::from(2)),
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn check(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let cascade = Cascade::load(&config).await?;
    let errors = cascade.load_errors();
    println!(
        "cascade \"{}\" ({}): {} tiers, budget {} ms",
        cascade.name(),
        path.display(),
        config.tiers.len(),
        config.cascade.budget_ms
    );
    for tier in cascade.tiers() {
        match &tier.sandbox {
            Ok(s) => {
                let info = s.plugin().info();
                let l = s.limits();
                println!(
                    "  ok    {:<14} {} {} ({}) sha256 {}  fuel {} mem {} MiB deadline {} ms min_confidence {}",
                    tier.config.name,
                    info.name,
                    info.version,
                    info.kind,
                    &info.sha256[..16],
                    l.fuel,
                    l.max_memory_mib,
                    l.deadline_ms,
                    tier.config.min_confidence
                );
                println!(
                    "        {:<14} policies: {}",
                    "",
                    tier.policies.names().join(" > ")
                );
            }
            Err(e) => println!(
                "  FAIL  {:<14} plugin {}: {e}",
                tier.config.name, tier.config.plugin
            ),
        }
    }
    if errors.is_empty() {
        println!("config OK");
        Ok(ExitCode::SUCCESS)
    } else {
        for (tier, error) in &errors {
            eprintln!("error: {}: tier \"{tier}\".plugin: {error}", path.display());
        }
        Ok(ExitCode::FAILURE)
    }
}

fn parse_labels(spec: &str) -> Result<std::collections::BTreeMap<String, String>> {
    let mut labels = std::collections::BTreeMap::new();
    for pair in spec.split(',').filter(|p| !p.trim().is_empty()) {
        let (from, to) = pair
            .split_once('=')
            .with_context(|| format!("--labels: `{pair}` is not VALUE=LABEL"))?;
        labels.insert(from.trim().to_string(), to.trim().to_string());
    }
    Ok(labels)
}

async fn calibrate(args: CalibrateArgs) -> Result<ExitCode> {
    use tierhost::eval;
    let LabeledData {
        config: config_path,
        data,
        label_column,
        labels,
    } = &args.input;
    let target = args.target_accuracy;
    anyhow::ensure!(
        target > 0.0 && target <= 1.0,
        "--target-accuracy must be within (0, 1]"
    );
    let config = Config::load(config_path)?;
    let rows = eval::read_labeled_csv(data, label_column, &parse_labels(labels)?)
        .map_err(anyhow::Error::msg)?;
    let engine = tierhost::TierEngine::new(&config.engine, &config.base_dir)?;
    println!(
        "# tierhost calibrate: target accuracy {target} on {} ({} rows)",
        data.display(),
        rows.len()
    );
    let mut unreachable = false;
    for (name, alone) in eval::single_tier_configs(&config) {
        let tier = &alone.tiers[0];
        let cascade = eval::load(&engine, &alone)
            .await
            .map_err(anyhow::Error::msg)?;
        let kind = cascade.cascade.tiers()[0]
            .sandbox
            .as_ref()
            .map(|s| s.plugin().info().kind)
            .unwrap_or(tierhost::TierKind::Other);
        if kind != tierhost::TierKind::Model {
            println!("# tier \"{}\" ({kind}): not a model, left as is", tier.name);
            continue;
        }
        let (_, answers) = eval::run(&name, &cascade, &rows, "", || {}).await;
        let scored: Vec<(f64, bool)> = rows
            .iter()
            .zip(&answers)
            .filter_map(|(row, a)| match &a.decision {
                Decision::Answer {
                    label, confidence, ..
                } if a.served_by.tier == tier.name => Some((*confidence, *label == row.label)),
                _ => None,
            })
            .collect();
        match eval::calibrate(&scored, rows.len(), target) {
            Some(c) => println!(
                "[[tier]] name = \"{}\": min_confidence = {:.4}  # accuracy {:.4} on the {:.1}% of rows it keeps",
                tier.name,
                c.min_confidence,
                c.accuracy,
                c.coverage * 100.0
            ),
            None => {
                unreachable = true;
                println!(
                    "# tier \"{}\": no threshold reaches accuracy {target} on this data",
                    tier.name
                );
            }
        }
    }
    Ok(if unreachable {
        ExitCode::from(3)
    } else {
        ExitCode::SUCCESS
    })
}

/// Labeled data shared by `eval` and `calibrate`.
#[derive(clap::Args)]
struct LabeledData {
    /// Cascade config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// CSV with a header: feature columns and the label column.
    #[arg(long)]
    data: PathBuf,
    /// Name of the label column.
    #[arg(long, default_value = "label")]
    label_column: String,
    /// Label mapping from CSV values to the cascade's labels, e.g. `1=phishing,0=legitimate`.
    #[arg(long, default_value = "")]
    labels: String,
}

#[derive(clap::Args)]
struct EvalArgs {
    #[command(flatten)]
    input: LabeledData,
    /// Scenario to run (repeatable): normal, primary-down, primary-slow,
    /// primary-slow-no-breaker, primary-garbage,
    /// fault-mix, primary-flapping, primary-heavy-tail, primary-heavy-tail-hedged, repeat,
    /// shift, shift-no-guard. Default: all.
    #[arg(long = "scenario")]
    scenarios: Vec<String>,
    /// The positive class (for AUC). Default: what `1` maps to.
    #[arg(long)]
    positive: Option<String>,
    /// Directory for summary.md, runs.json, tier_mix.svg and accuracy_vs_coverage.svg.
    #[arg(long)]
    report: Option<PathBuf>,
    /// Print the summary as one JSON document on stdout.
    #[arg(long)]
    json: bool,
    /// Request rate the replay stands for: the cascade's clock (breaker windows and open
    /// times, chaos windows) advances by 1/RATE seconds per row.
    #[arg(long, default_value_t = tierhost::eval::DEFAULT_ROWS_PER_S)]
    rate: f64,
}

#[derive(clap::Args)]
struct CalibrateArgs {
    #[command(flatten)]
    input: LabeledData,
    /// Accuracy the kept answers must reach, in (0, 1].
    #[arg(long)]
    target_accuracy: f64,
}

async fn eval(args: EvalArgs) -> Result<ExitCode> {
    use tierhost::eval::{self, Scenario};
    let config = Config::load(&args.input.config)?;
    let labels = parse_labels(&args.input.labels)?;
    let positive = args
        .positive
        .or_else(|| labels.get("1").cloned())
        .unwrap_or_else(|| "1".into());
    let rows = eval::read_labeled_csv(&args.input.data, &args.input.label_column, &labels)
        .map_err(anyhow::Error::msg)?;
    let scenarios = if args.scenarios.is_empty() {
        Scenario::ALL.to_vec()
    } else {
        args.scenarios
            .iter()
            .map(|s| Scenario::parse(s))
            .collect::<Result<Vec<_>, _>>()
            .map_err(anyhow::Error::msg)?
    };
    let engine = tierhost::TierEngine::new(&config.engine, &config.base_dir)?;
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a number of rows per second > 0"
    );
    let mut runs: Vec<(String, Config, Vec<eval::LabeledRow>)> = scenarios
        .iter()
        .map(|s| {
            let replay = s.rows(&rows);
            (
                s.name().to_string(),
                s.apply(&config, replay.len(), args.rate),
                replay,
            )
        })
        .collect();
    runs.extend(
        eval::single_tier_configs(&config)
            .into_iter()
            .map(|(n, c)| (n, c, rows.clone())),
    );

    let total: usize = runs.iter().map(|(_, _, replay)| replay.len()).sum();
    let bar = indicatif::ProgressBar::new(total as u64);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>24} [{bar:40}] {pos}/{len} rows, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let mut reports = Vec::new();
    let primary_alone_name = config.tiers.first().map(|t| format!("{} alone", t.name));
    let mut primary_alone = None;
    for (name, run_config, replay) in &runs {
        bar.set_message(name.clone());
        let cascade = eval::load_at(&engine, run_config, args.rate)
            .await
            .map_err(anyhow::Error::msg)?;
        let (report, answers) = eval::run(name, &cascade, replay, &positive, || bar.inc(1)).await;
        if primary_alone.is_none() && Some(name.as_str()) == primary_alone_name.as_deref() {
            primary_alone = Some(eval::scored(&rows, &answers));
        }
        reports.push(report);
    }
    bar.finish_and_clear();

    let tiers: Vec<String> = config.tiers.iter().map(|t| t.name.clone()).collect();
    let mut summary = eval::markdown(&reports, &tiers);
    let thresholds: Vec<f64> = (10..20).map(|i| f64::from(i) * 0.05).collect();
    let curve = primary_alone
        .map(|scored| eval::coverage_curve(&scored, rows.len(), &thresholds))
        .unwrap_or_default();
    if !curve.is_empty() {
        summary.push_str(&format!(
            "\nAccuracy vs coverage of `{}` as its min_confidence varies:\n\n| min_confidence | coverage | accuracy |\n|---:|---:|---:|\n",
            tiers[0]
        ));
        for (t, coverage, accuracy) in &curve {
            summary.push_str(&format!(
                "| {t:.2} | {:.1}% | {} |\n",
                coverage * 100.0,
                accuracy.map_or("-".into(), |a| format!("{:.1}%", a * 100.0))
            ));
        }
    }
    let document = serde_json::json!({
        "config": args.input.config,
        "data": args.input.data,
        "rows": rows.len(),
        "rows_per_s": args.rate,
        "positive_label": positive,
        "runs": reports,
        "primary_coverage_curve": curve,
    });
    if let Some(dir) = &args.report {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("{}: cannot create", dir.display()))?;
        let heading = format!(
            "# tierhost eval: {} on {} ({} rows, replayed as {} requests/s)\n\nAccuracy is on answered requests; coverage is the share not abstained; fallback rate is the share not served by the first tier. \"X alone\" runs the tier by itself, without a confidence threshold, breaker or hedging. `repeat` replays every row twice.\n\n",
            args.input.config.display(),
            args.input.data.display(),
            rows.len(),
            args.rate
        );
        std::fs::write(dir.join("summary.md"), format!("{heading}{summary}"))?;
        std::fs::write(
            dir.join("runs.json"),
            serde_json::to_string_pretty(&document)?,
        )?;
        tierhost::eval::plots::tier_mix(&dir.join("tier_mix.svg"), &reports, &tiers)
            .map_err(anyhow::Error::msg)?;
        tierhost::eval::plots::accuracy_vs_coverage(
            &dir.join("accuracy_vs_coverage.svg"),
            &tiers[0],
            &curve,
        )
        .map_err(anyhow::Error::msg)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&document)?);
    } else {
        println!("{summary}");
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(clap::Args)]
struct DrillArgs {
    /// Cascade config (TOML).
    #[arg(long)]
    config: PathBuf,
    /// Sample requests, JSON lines (default: the config's `cascade.check_samples`).
    #[arg(long, conflicts_with = "data")]
    samples: Option<PathBuf>,
    /// Or sample requests from a labeled CSV (as for `eval`; the label column is dropped).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Name of the CSV's label column.
    #[arg(long, default_value = "label", requires = "data")]
    label_column: String,
    /// Label mapping of the CSV, as for `eval` (accepted for symmetry; labels are not used).
    #[arg(long, default_value = "", requires = "data")]
    labels: String,
    /// Replay the first N sample requests.
    #[arg(long, default_value_t = 50)]
    rows: usize,
    /// Print the report as one JSON document instead of the matrix.
    #[arg(long)]
    json: bool,
}

async fn drill(args: DrillArgs) -> Result<ExitCode> {
    use tierhost::drill;
    anyhow::ensure!(args.rows > 0, "--rows must be at least 1");
    let config = Config::load(&args.config)?;
    let (source, mut samples) = match (&args.samples, &args.data) {
        (Some(path), _) => (path.clone(), drill::read_requests(path)?),
        (None, Some(csv)) => {
            let rows = tierhost::eval::read_labeled_csv(
                csv,
                &args.label_column,
                &parse_labels(&args.labels)?,
            )
            .map_err(anyhow::Error::msg)?;
            (csv.clone(), rows.into_iter().map(|r| r.request).collect())
        }
        (None, None) => {
            let path = drill::default_samples(&config)?;
            let samples = drill::read_requests(&path)?;
            (path, samples)
        }
    };
    let available = samples.len();
    samples.truncate(args.rows);
    let source = if available > samples.len() {
        format!(
            "{} (first {} of {available})",
            source.display(),
            samples.len()
        )
    } else {
        source.display().to_string()
    };
    let engine = tierhost::TierEngine::new(&config.engine, &config.base_dir)?;
    let report = drill::run(&engine, &config, &source, &samples).await?;
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        print!("{}", drill::render(&report));
    }
    Ok(if report.gaps == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

async fn serve(config_path: &Path, listen: Option<String>) -> Result<ExitCode> {
    let service = tierhost::CascadeService::start(config_path).await?;
    let addr = listen.unwrap_or_else(|| service.current().config.server.listen.clone());
    let listener = tokio::net::TcpListener::bind(&addr)
        .await
        .with_context(|| format!("cannot listen on {addr}"))?;
    tierhost::server::serve(service, listener).await?;
    Ok(ExitCode::SUCCESS)
}

async fn run(config_path: &Path, input: &Path) -> Result<ExitCode> {
    let config = Config::load(config_path)?;
    let text = if input == Path::new("-") {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading the request from stdin")?;
        s
    } else {
        std::fs::read_to_string(input)
            .with_context(|| format!("{}: cannot read", input.display()))?
    };
    let request = Request::from_json(&text).with_context(|| format!("{}", input.display()))?;
    let cascade = Cascade::load(&config).await?;
    let answer = cascade.predict(&request).await;
    println!("{}", serde_json::to_string_pretty(&answer)?);
    Ok(ExitCode::SUCCESS)
}

async fn demo(json: bool) -> Result<ExitCode> {
    let base = Path::new(".");
    let healthy = Config::parse(DEMO_CONFIG, Path::new("examples/fraud/cascade.toml"), base)?;
    let requests = DEMO_REQUESTS
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(Request::from_json)
        .collect::<Result<Vec<_>, _>>()?;

    let mut broken = healthy.clone();
    broken.tiers[0].plugin = "builtin:chaos".into();
    broken.tiers[0].params = toml::toml! { mode = "infinite-loop" };

    let scenarios = [
        ("healthy cascade", healthy),
        (
            "primary replaced by a tier stuck in an infinite loop (builtin:chaos)",
            broken,
        ),
    ];
    let levels: Vec<&str> = scenarios[0]
        .1
        .tiers
        .iter()
        .map(|t| t.name.as_str())
        .collect();
    if !json {
        println!(
            "tierhost demo: cascade \"{}\": {} -> safe-default\n",
            scenarios[0].1.cascade.name,
            levels.join(" -> ")
        );
    }
    for (title, config) in &scenarios {
        let cascade = Cascade::load(config).await?;
        if !json {
            println!("== {title}");
            println!(
                "{:<20} {:<12} {:<7} {:>5} {:>9} {:>8}  trail",
                "request", "served by", "label", "conf", "degraded", "time"
            );
        }
        for request in &requests {
            let answer = cascade.predict(request).await;
            if json {
                println!("{}", serde_json::to_string(&answer)?);
            } else {
                print_row(&answer);
            }
        }
        if !json {
            println!();
        }
    }
    if !json {
        println!(
            "Each answer's full provenance: tierhost demo --json, or tierhost run --config examples/fraud/cascade.toml --input examples/fraud/request.json"
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn print_row(answer: &Answer) {
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
    println!(
        "{:<20} {:<12} {:<7} {:>5} {:>9} {:>6}us  {}",
        answer.request_id,
        answer.served_by.tier,
        label,
        confidence,
        if answer.degraded { "yes" } else { "no" },
        answer.elapsed_us,
        trail.join(" > ")
    );
}
