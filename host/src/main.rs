//! The `tierhost` command line: check a cascade config, answer one request, serve, evaluate,
//! calibrate, run fire drills, run the demo. The work lives in the library; this is argument
//! parsing and printing.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use tierhost::drill::{self, SampleSource, Samples};
use tierhost::eval::{self, Dataset, EvalOptions, Scenario, TierCalibration};
use tierhost::{Cascade, Config, Request, TierEngine};

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

/// Labeled data shared by `eval` and `calibrate`.
#[derive(clap::Args)]
struct DataArgs {
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
    input: DataArgs,
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
    input: DataArgs,
    /// Accuracy the kept answers must reach, in (0, 1].
    #[arg(long)]
    target_accuracy: f64,
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
    let result = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|runtime| runtime.block_on(dispatch(cli.command)));
    result.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        ExitCode::FAILURE
    })
}

async fn dispatch(command: Command) -> Result<ExitCode> {
    match command {
        Command::Check { config } => check(&config).await,
        Command::Run { config, input } => run(&config, &input).await,
        Command::Demo { json } => demo(json).await,
        Command::Serve { config, listen } => serve(&config, listen).await,
        Command::Calibrate(args) => calibrate(args).await,
        Command::Eval(args) => eval(args).await,
        Command::Drill(args) => drill(args).await,
        Command::CompileComponent { .. } => Ok(ExitCode::from(2)),
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

impl DataArgs {
    /// The config, the label mapping and the labeled rows.
    fn load(&self) -> Result<(Config, BTreeMap<String, String>, Dataset)> {
        let config = Config::load(&self.config)?;
        let labels = labels(&self.labels)?;
        let data = Dataset::read(&self.data, &self.label_column, &labels)?;
        Ok((config, labels, data))
    }
}

fn labels(spec: &str) -> Result<BTreeMap<String, String>> {
    eval::parse_labels(spec).context("--labels")
}

fn engine(config: &Config) -> Result<TierEngine> {
    Ok(TierEngine::new(&config.engine, &config.base_dir)?)
}

async fn eval(args: EvalArgs) -> Result<ExitCode> {
    let (config, labels, data) = args.input.load()?;
    let scenarios = Scenario::parse_all(&args.scenarios)?;
    anyhow::ensure!(
        args.rate.is_finite() && args.rate > 0.0,
        "--rate must be a number of rows per second > 0"
    );
    let options = EvalOptions {
        scenarios,
        positive_label: (args.positive.or_else(|| labels.get("1").cloned()))
            .unwrap_or_else(|| "1".into()),
        rows_per_s: args.rate,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>24} [{bar:40}] {pos}/{len} rows, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let report = eval::evaluate(&engine(&config)?, &config, &data, &options, |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.run.to_string());
    })
    .await?;
    bar.finish_and_clear();
    if let Some(dir) = &args.report {
        report.write(dir)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
    }
    Ok(ExitCode::SUCCESS)
}

async fn calibrate(args: CalibrateArgs) -> Result<ExitCode> {
    let target = args.target_accuracy;
    anyhow::ensure!(
        target > 0.0 && target <= 1.0,
        "--target-accuracy must be within (0, 1]"
    );
    let (config, _, data) = args.input.load()?;
    let engine = engine(&config)?;
    println!(
        "# tierhost calibrate: target accuracy {target} on {} ({} rows)",
        data.path.display(),
        data.rows.len()
    );
    let tiers = eval::calibrate_tiers(&engine, &config, &data.rows, target).await?;
    for tier in &tiers {
        println!("{tier}");
    }
    // Exit 3: a target no threshold reaches on this data.
    Ok(if tiers.iter().all(TierCalibration::reached) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(3)
    })
}

async fn drill(args: DrillArgs) -> Result<ExitCode> {
    anyhow::ensure!(args.rows > 0, "--rows must be at least 1");
    let config = Config::load(&args.config)?;
    let source = match (args.samples, args.data) {
        (Some(path), _) => SampleSource::Jsonl(path),
        (None, Some(path)) => SampleSource::Csv {
            path,
            label_column: args.label_column,
            labels: labels(&args.labels)?,
        },
        (None, None) => SampleSource::CheckSamples,
    };
    let samples = Samples::load(&config, &source, args.rows)?;
    let report = drill::run(&engine(&config)?, &config, &samples).await?;
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

async fn demo(json: bool) -> Result<ExitCode> {
    let demo = drill::demo().await?;
    if json {
        for answer in demo.runs.iter().flat_map(|run| &run.answers) {
            println!("{}", serde_json::to_string(answer)?);
        }
    } else {
        print!("{}", demo.render());
    }
    Ok(ExitCode::SUCCESS)
}
