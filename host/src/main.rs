//! The `tierhost` command line: check a cascade config, answer one request, serve, evaluate,
//! calibrate, run fire drills, run the demo. The work lives in the library; this is argument
//! parsing and printing.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tierhost::drill::{self, SampleSource, Samples};
use tierhost::eval::{self, Dataset, EvalOptions, Scenario, TierCalibration};
use tierhost::{Cascade, Config, Request, TierEngine};

mod cli;
use cli::{CalibrateArgs, Cli, Command, DataArgs, DrillArgs, EvalArgs};

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
    print!("{}", cascade.summary(path));
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
