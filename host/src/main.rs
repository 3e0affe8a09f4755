//! The `tierhost` command line: check a cascade config, answer one request, serve, evaluate,
//! calibrate, run fire drills, run the demo, make keys and sign and verify plugins. The work
//! lives in the library; this is argument parsing and printing.
use std::collections::BTreeMap;
use std::io::Read;
use std::path::Path;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;
use tierhost::drill::{self, SampleSource, Samples};
use tierhost::eval::{self, Dataset, EvalOptions, Scenario, TierCalibration};
use tierhost::{Cascade, Config, Request, TierEngine, signing};

mod cli;
mod scaffold;
use cli::{
    CalibrateArgs, Cli, Command, DataArgs, DrillArgs, EvalArgs, ExportFormatArg, ReviewAction,
    ReviewArgs, ReviewStatus, RolloutArgs, ShadowArgs,
};

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
        Command::Check { .. } | Command::Serve { .. } | Command::Pull { .. } => "info",
        Command::Push { .. } => "warn",
        Command::Run { .. }
        | Command::Review(_)
        | Command::Keygen { .. }
        | Command::Sign { .. }
        | Command::Verify { .. }
        | Command::Promote(_)
        | Command::Rollback(_)
        | Command::Shadow(_)
        | Command::New(_) => "warn",
        Command::Diff { .. } => "warn",
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
        Command::Pull { config } => pull(&config).await,
        Command::Push { file, to, insecure } => {
            let config = tierhost::OciConfig {
                insecure,
                ..tierhost::OciConfig::default()
            };
            let digest = tierhost::oci::push(&config, &file, &to).await?;
            // The tag stays for readers; the digest is what pins it.
            let pinned = tierhost::OciRef {
                digest: Some(digest),
                ..tierhost::OciRef::parse(&to).map_err(anyhow::Error::msg)?
            };
            println!("{pinned}");
            Ok(ExitCode::SUCCESS)
        }
        // Like `diff`: 0 same, 1 different, 2 trouble.
        Command::Diff { old, new, json } => Ok(diff(&old, &new, json).unwrap_or_else(|e| {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        })),
        Command::Run { config, input } => run(&config, &input).await,
        Command::Demo { json } => demo(json).await,
        Command::Serve { config, listen } => serve(&config, listen).await,
        Command::Calibrate(args) => calibrate(args).await,
        Command::Eval(args) => eval(args).await,
        Command::Drill(args) => drill(args).await,
        Command::Review(args) => review(args),
        Command::Keygen { out, name } => keygen(&out, name),
        Command::Sign { key, name, files } => sign(&key, name, &files),
        Command::Verify {
            config,
            pubkey,
            files,
        } => verify(config.as_deref(), pubkey.as_deref(), &files),
        Command::Promote(args) => rollout(tierhost::RolloutAction::Promote, args).await,
        Command::Rollback(args) => rollout(tierhost::RolloutAction::Rollback, args).await,
        Command::Shadow(args) => shadow(args).await,
        Command::New(cli::NewArgs {
            what:
                cli::NewWhat::Tier {
                    name,
                    lang,
                    kind,
                    dir,
                },
        }) => {
            let dir = scaffold::new_tier(&name, lang, kind, dir.as_deref())?;
            println!(
                "wrote a {lang} tier project in {}: `cd {} && ./test.sh` builds it and answers \
                 its samples through `tierhost run` (README.md there says more)",
                dir.display(),
                dir.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::CompileComponent { .. } => Ok(ExitCode::from(2)),
    }
}

/// `tierhost pull`: every `oci://` plugin of the config (tiers and shadow candidates) into the
/// store; one line per plugin.
async fn pull(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let mut failed = false;
    let plugins = config.tiers.iter().flat_map(|tier| {
        std::iter::once(&tier.plugin).chain(tier.shadow.as_ref().map(|s| &s.plugin))
    });
    let mut any = false;
    for plugin in plugins {
        let tierhost::PluginSource::Oci { reference, local } = plugin else {
            continue;
        };
        any = true;
        match tierhost::oci::ensure(&config.oci, reference, &config.resolve(local)).await {
            Ok(pulled) => println!(
                "{} {reference} sha256:{} -> {}{}",
                if pulled.fetched { "pulled " } else { "present" },
                pulled.digest,
                pulled.file.display(),
                if pulled.signed {
                    " (with signature)"
                } else {
                    ""
                }
            ),
            Err(e) => {
                failed = true;
                eprintln!("error: {e}");
            }
        }
    }
    if !any {
        println!("no oci:// plugins in {}", path.display());
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

async fn check(path: &Path) -> Result<ExitCode> {
    let config = Config::load(path)?;
    let cascade = Cascade::load(&config).await?;
    let errors = cascade.load_errors();
    print!("{}", cascade.summary(path));
    // How each threshold was chosen, as `calibrate --write` recorded it beside the value.
    if let Ok(text) = std::fs::read_to_string(path) {
        for (tier, note) in eval::calibration_notes(&text) {
            println!("  calibration: tier \"{tier}\" min_confidence {note}");
        }
    }
    // The reload gate, as a reload would run it, and what it shows of the allowlists.
    let mut samples_failed = false;
    if errors.is_empty()
        && let Some(file) = &config.cascade.check_samples
    {
        let samples = drill::read_requests(&config.resolve(file))?;
        for read in cascade.hidden_feature_reads(&samples).await {
            println!(
                "WARN  tier \"{}\" reads feature `{}`, which its features allowlist hides \
                 (sample `{}` has it; the tier answered missing-feature): add it to the \
                 tier's features or stop reading it",
                read.tier, read.feature, read.request_id
            );
        }
        match cascade.check_samples(&samples).await {
            Ok(()) => println!("samples: every tier answered the {} samples", samples.len()),
            Err(failure) => {
                eprintln!("error: {}: {failure}", path.display());
                samples_failed = true;
            }
        }
    }
    if errors.is_empty() && !samples_failed {
        println!("config OK");
        Ok(ExitCode::SUCCESS)
    } else {
        for (tier, error) in &errors {
            eprintln!("error: {}: tier \"{tier}\".plugin: {error}", path.display());
        }
        Ok(ExitCode::FAILURE)
    }
}

/// `tierhost diff OLD NEW`: the library's [`tierhost::ConfigDiff`], printed.
fn diff(old: &Path, new: &Path, json: bool) -> Result<ExitCode> {
    let diff = tierhost::ConfigDiff::between(&Config::load(old)?, &Config::load(new)?);
    if json {
        println!("{}", serde_json::to_string_pretty(&diff)?);
    } else {
        print!("{diff}");
    }
    Ok(if diff.is_empty() {
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
    let server = service.current().config.server.clone();
    let admin = match &server.admin_listen {
        Some(admin_addr) => Some(
            tokio::net::TcpListener::bind(admin_addr)
                .await
                .with_context(|| format!("cannot listen on {admin_addr} (server.admin_listen)"))?,
        ),
        None => None,
    };
    let auth = tierhost::server::AdminAuth::from_config(&server);
    tierhost::server::serve_listeners(service, listener, admin, auth).await?;
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

fn review(args: ReviewArgs) -> Result<ExitCode> {
    use tierhost::escalation::{EscalationStore, ExportFormat, ResolveError, Status};
    let (path, review_labels) = match (&args.queue, &args.config) {
        (Some(queue), _) => (queue.clone(), Vec::new()),
        (None, Some(config_path)) => {
            let config = Config::load(config_path)?;
            let escalation = config.escalation.as_ref().with_context(|| {
                format!(
                    "{}: no [escalation] section names a queue",
                    config_path.display()
                )
            })?;
            (config.resolve(&escalation.queue), escalation.labels.clone())
        }
        (None, None) => anyhow::bail!("give --queue FILE or --config FILE"),
    };
    if !path.exists() {
        anyhow::bail!(
            "{}: no escalation queue here (nothing has escalated yet?)",
            path.display()
        );
    }
    let store = EscalationStore::open(&path)?;
    match args.action {
        ReviewAction::List {
            status,
            limit,
            json,
        } => {
            let status = match status {
                ReviewStatus::Pending => Some(Status::Pending),
                ReviewStatus::Resolved => Some(Status::Resolved),
                ReviewStatus::All => None,
            };
            let items = store.list(status, limit)?;
            let stats = store.stats()?;
            if json {
                let doc = serde_json::json!({ "pending": stats.pending, "items": items });
                println!("{}", serde_json::to_string_pretty(&doc)?);
                return Ok(ExitCode::SUCCESS);
            }
            println!(
                "{} pending (oldest {:.0} s) in {}",
                stats.pending,
                stats.oldest_pending_s,
                path.display()
            );
            for item in &items {
                let outcome = match &item.resolution {
                    Some(r) => format!(
                        "resolved `{}` by {}",
                        r.label,
                        r.by.as_deref().unwrap_or("-")
                    ),
                    None => format!("pending {}", age(item.age_s)),
                };
                println!(
                    "{}  {:<28} {:<24} {}",
                    item.id,
                    outcome,
                    item.request_id,
                    trail_summary(&item.trail, &item.served_by)
                );
            }
        }
        ReviewAction::Show { id } => match store.get(&id)? {
            Some(item) => println!("{}", serde_json::to_string_pretty(&item)?),
            None => anyhow::bail!("no escalation `{id}` in {}", path.display()),
        },
        ReviewAction::Resolve {
            id,
            label,
            note,
            by,
        } => {
            let by = by.or_else(|| {
                std::env::var("USER")
                    .or_else(|_| std::env::var("LOGNAME"))
                    .ok()
            });
            match store.resolve(&id, &label, note.as_deref(), by.as_deref(), &review_labels) {
                Ok(item) => println!("resolved {} ({}) as `{label}`", item.id, item.request_id),
                Err(
                    e @ (ResolveError::AlreadyResolved(_)
                    | ResolveError::NotFound(_)
                    | ResolveError::Invalid(_)),
                ) => {
                    eprintln!("error: {e}");
                    return Ok(ExitCode::FAILURE);
                }
                Err(ResolveError::Store(e)) => return Err(e.into()),
            }
        }
        ReviewAction::Export {
            format,
            out,
            label_column,
            labels: mapping,
        } => {
            let values: BTreeMap<String, String> = labels(&mapping)?
                .into_iter()
                .map(|(value, label)| (label, value))
                .collect();
            let format = match format {
                ExportFormatArg::Csv => ExportFormat::Csv,
                ExportFormatArg::Jsonl => ExportFormat::Jsonl,
            };
            let items = store.list(Some(Status::Resolved), usize::MAX)?;
            let written = match &out {
                Some(file) => {
                    let mut w = std::io::BufWriter::new(
                        std::fs::File::create(file)
                            .with_context(|| format!("{}: cannot create", file.display()))?,
                    );
                    let n = tierhost::escalation::export(
                        &items,
                        format,
                        &label_column,
                        &values,
                        &mut w,
                    )?;
                    std::io::Write::flush(&mut w)?;
                    n
                }
                None => tierhost::escalation::export(
                    &items,
                    format,
                    &label_column,
                    &values,
                    &mut std::io::stdout().lock(),
                )?,
            };
            eprintln!("exported {written} resolved escalations");
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// A key's name: `--name`, else the key file's name without its extension.
fn key_name(name: Option<String>, key_file: &Path) -> Result<String> {
    let name = match name {
        Some(name) => name,
        None => key_file
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or_default()
            .to_string(),
    };
    anyhow::ensure!(
        signing::is_key_name(&name),
        "key name `{name}`: 1-64 letters, digits, `-`, `_` or `.` (give --name)"
    );
    Ok(name)
}

fn keygen(out: &Path, name: Option<String>) -> Result<ExitCode> {
    let name = key_name(name, out)?;
    let key = signing::PrivateKey::generate()?;
    key.write_new(out)?;
    println!("{name} = \"{}\"", key.public_key());
    eprintln!(
        "wrote the private key to {} (owner only); the line above goes in [trust]",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn sign(key_file: &Path, name: Option<String>, files: &[std::path::PathBuf]) -> Result<ExitCode> {
    let name = key_name(name, key_file)?;
    let key = signing::PrivateKey::read(key_file)?;
    for file in files {
        let (path, signature) = signing::sign_file(&key, &name, file)?;
        println!(
            "signed {} (sha256 {}) as `{name}`: {}",
            file.display(),
            signature.sha256,
            path.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

fn verify(
    config: Option<&Path>,
    pubkey: Option<&str>,
    files: &[std::path::PathBuf],
) -> Result<ExitCode> {
    let mut failed = false;
    let mut report = |what: String, outcome: Result<signing::Verified, String>| match outcome {
        Ok(v) => println!("ok  {what}: signed by `{}` (sha256 {})", v.signer, v.sha256),
        Err(e) => {
            failed = true;
            eprintln!("error: {what}: {e}");
        }
    };
    match (config, pubkey) {
        (Some(path), _) => {
            let config = Config::load(path)?;
            for check in signing::verify_config(&config) {
                report(
                    format!("tier \"{}\" {}", check.tier, check.role),
                    check.outcome.map_err(|e| e.to_string()),
                );
            }
            for tier in config.tiers.iter().filter(|t| t.signed_by.is_empty()) {
                println!("-   tier \"{}\": no signed_by, not checked", tier.name);
            }
        }
        (None, Some(key)) => {
            let key: signing::PublicKey =
                key.parse().map_err(|e| anyhow::anyhow!("--pubkey: {e}"))?;
            let name = "--pubkey".to_string();
            let signers = signing::Signers::new(vec![name.clone()], [(name, key)].into());
            for file in files {
                let outcome = std::fs::read(file)
                    .map_err(|e| format!("cannot read: {e}"))
                    .and_then(|bytes| signers.verify(file, &bytes).map_err(|e| e.to_string()));
                report(file.display().to_string(), outcome);
            }
        }
        (None, None) => anyhow::bail!("give --config FILE or --pubkey KEY FILE..."),
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// `tierhost promote` / `rollback`: the server decides; a refusal is its message (and, for
/// the gate, the shadow report it decided on) and exit 1.
async fn rollout(action: tierhost::RolloutAction, args: RolloutArgs) -> Result<ExitCode> {
    use tierhost::admin_client::{AdminClient, AdminClientError};
    let client = AdminClient::new(&args.url)?.with_env_token();
    let by = args.by.or_else(|| {
        std::env::var("USER")
            .or_else(|_| std::env::var("LOGNAME"))
            .ok()
    });
    let answer = match action {
        tierhost::RolloutAction::Promote => client.promote(&args.tier, by.as_deref()).await,
        tierhost::RolloutAction::Rollback => client.rollback(&args.tier, by.as_deref()).await,
    };
    match answer {
        Ok(report) if args.json => println!("{}", serde_json::to_string_pretty(&report)?),
        Ok(report) => println!("{}", tierhost::admin_client::rollout_line(&report)),
        Err(e) => {
            eprintln!("error: {e}");
            if let AdminClientError::Refused { body, .. } = &e
                && body["shadow"].is_object()
            {
                eprint!("{}", tierhost::shadow::render(&body["shadow"]));
            }
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `tierhost shadow`: the server's shadow report of a tier.
async fn shadow(args: ShadowArgs) -> Result<ExitCode> {
    let client = tierhost::admin_client::AdminClient::new(&args.url)?.with_env_token();
    match client.shadow_report(&args.tier).await {
        Ok(report) if args.json => println!("{}", serde_json::to_string_pretty(&report)?),
        Ok(report) => print!("{}", tierhost::shadow::render(&report)),
        Err(e) => {
            eprintln!("error: {e}");
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// An age as a reviewer reads it.
fn age(seconds: f64) -> String {
    match seconds {
        s if s < 120.0 => format!("{s:.0} s"),
        s if s < 7200.0 => format!("{:.0} min", s / 60.0),
        s if s < 172_800.0 => format!("{:.0} h", s / 3600.0),
        s => format!("{:.0} d", s / 86_400.0),
    }
}

/// `primary: deadline -> rules: low-confidence -> safe-default`.
fn trail_summary(trail: &serde_json::Value, served_by: &str) -> String {
    let mut steps: Vec<String> = trail
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| {
            let tier = entry["tier"].as_str().unwrap_or("?");
            let why = entry["reason"]["kind"]
                .as_str()
                .or_else(|| entry["step"].as_str())
                .unwrap_or("?");
            format!("{tier}: {why}")
        })
        .collect();
    if served_by == tierhost::SAFE_DEFAULT {
        steps.push(served_by.to_string());
    }
    steps.join(" -> ")
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
    let escalations = match &args.escalations {
        None => None,
        Some(file) => {
            let scenario = match &args.escalations_scenario {
                Some(name) => Scenario::parse(name).context("--escalations-scenario")?,
                None if scenarios.contains(&Scenario::PrimaryDown) => Scenario::PrimaryDown,
                None => scenarios[0],
            };
            let queue = std::path::absolute(file)
                .with_context(|| format!("--escalations {}", file.display()))?;
            Some(eval::EscalationOutput::new(&config, scenario, queue)?)
        }
    };
    let shadow = shadow_candidates(&config, &scenarios, &args.shadows)?;
    let options = EvalOptions {
        scenarios,
        positive_label: (args.positive.or_else(|| labels.get("1").cloned()))
            .unwrap_or_else(|| "1".into()),
        rows_per_s: args.rate,
        escalations,
        shadow,
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{msg:>24} [{bar:40}] {pos}/{len} rows, {eta} left",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let engine = engine(&config)?;
    let mut report = eval::evaluate(&engine, &config, &data, &options, |p| {
        bar.set_length(p.total as u64);
        bar.set_position(p.done as u64);
        bar.set_message(p.run.to_string());
    })
    .await?;
    bar.finish_and_clear();
    if let Some(train) = &args.train {
        let labels = eval::parse_labels(&args.input.labels)?;
        let train_rows = eval::read_labeled_csv(train, &args.input.label_column, &labels)
            .with_context(|| format!("--train {}", train.display()))?;
        let shared = eval::SharedRows {
            train: train.clone(),
            shared: eval::shared_rows(&data.rows, &train_rows),
            rows: data.rows.len(),
        };
        if shared.shared > 0 {
            eprintln!("warning: {shared}");
        }
        report.shared_with_train = Some(shared);
    }
    if let Some(alpha) = args.alpha {
        let target = eval::RiskTarget::new(alpha, args.delta)?;
        let tiers = eval::tier_scores(&engine, &config, &data.rows).await?;
        report.promise = Some(eval::check_promise(
            &tiers,
            target,
            args.scope.into(),
            args.bootstrap,
            args.seed,
        ));
    }
    if let Some(dir) = &args.report {
        report.write(dir)?;
    }
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("{}", report.summary());
    }
    if let Some(written) = &report.escalations {
        eprintln!(
            "wrote {} escalations of scenario {} to {}",
            written.recorded,
            written.scenario.name(),
            written.queue.display()
        );
        if let Some(problem) = &written.problem {
            eprintln!(
                "error: {} escalations were not recorded; the first: {problem}",
                written.not_recorded
            );
            return Ok(ExitCode::FAILURE);
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// `--shadow TIER=FILE` arguments: FILE relative to the current directory, or `builtin:NAME`;
/// the shadowed scenario is `normal` when it runs, else the first one.
fn shadow_candidates(
    config: &Config,
    scenarios: &[Scenario],
    args: &[String],
) -> Result<Option<eval::ShadowCandidates>> {
    if args.is_empty() {
        return Ok(None);
    }
    let candidates = args
        .iter()
        .map(|arg| {
            let (tier, file) = arg
                .split_once('=')
                .filter(|(tier, file)| !tier.is_empty() && !file.is_empty())
                .with_context(|| format!("--shadow {arg}: expected TIER=FILE"))?;
            let plugin = match file.strip_prefix("builtin:") {
                Some(name) => tierhost::PluginSource::Builtin(name.to_string()),
                None => tierhost::PluginSource::File(
                    std::path::absolute(file).with_context(|| format!("--shadow {arg}"))?,
                ),
            };
            Ok((tier.to_string(), plugin))
        })
        .collect::<Result<Vec<_>>>()?;
    let scenario = if scenarios.contains(&Scenario::Normal) {
        Scenario::Normal
    } else {
        scenarios[0]
    };
    Ok(Some(eval::ShadowCandidates::new(
        config, scenario, candidates,
    )?))
}

async fn calibrate(args: CalibrateArgs) -> Result<ExitCode> {
    let method = match args.method {
        cli::CalibrationMethod::Empirical => {
            let target = args
                .target_accuracy
                .context("--method empirical needs --target-accuracy")?;
            anyhow::ensure!(
                target > 0.0 && target <= 1.0,
                "--target-accuracy must be within (0, 1]"
            );
            anyhow::ensure!(args.alpha.is_none(), "--alpha is for --method conformal");
            format!("--method empirical --target-accuracy {target}")
        }
        cli::CalibrationMethod::Conformal => {
            let alpha = args.alpha.context("--method conformal needs --alpha")?;
            anyhow::ensure!(
                args.target_accuracy.is_none(),
                "--target-accuracy is for --method empirical (conformal takes --alpha, --delta)"
            );
            eval::RiskTarget::new(alpha, args.delta)?;
            match args.scope {
                cli::RiskScope::Cascade => {
                    format!("--method conformal --alpha {alpha} --delta {}", args.delta)
                }
                cli::RiskScope::Alone => format!(
                    "--method conformal --alpha {alpha} --delta {} --scope alone",
                    args.delta
                ),
            }
        }
    };
    let (config, _, data) = args.input.load()?;
    let engine = engine(&config)?;
    println!(
        "# tierhost calibrate {method} on {} ({} rows)",
        data.path.display(),
        data.rows.len()
    );
    let (lines, thresholds, reached): (Vec<String>, Vec<(String, f64)>, bool) = match args.method {
        cli::CalibrationMethod::Empirical => {
            let target = args.target_accuracy.unwrap_or(1.0);
            let tiers = eval::calibrate_tiers(&engine, &config, &data.rows, target).await?;
            (
                tiers.iter().map(ToString::to_string).collect(),
                tiers
                    .iter()
                    .filter_map(|t| match &t.outcome {
                        eval::CalibrationOutcome::Threshold(c) => {
                            Some((t.tier.clone(), c.min_confidence))
                        }
                        _ => None,
                    })
                    .collect(),
                tiers.iter().all(TierCalibration::reached),
            )
        }
        cli::CalibrationMethod::Conformal => {
            let target = eval::RiskTarget::new(args.alpha.unwrap_or(0.0), args.delta)?;
            let tiers =
                eval::calibrate_risk(&engine, &config, &data.rows, target, args.scope.into())
                    .await?;
            (
                tiers.iter().map(ToString::to_string).collect(),
                tiers
                    .iter()
                    .filter_map(|t| t.min_confidence().map(|c| (t.tier.clone(), c)))
                    .collect(),
                tiers.iter().all(eval::TierRisk::reached),
            )
        }
    };
    for line in &lines {
        println!("{line}");
    }
    if args.write {
        if thresholds.is_empty() {
            eprintln!(
                "error: not writing {}: no model tier got a threshold (see above)",
                args.input.config.display()
            );
            return Ok(ExitCode::from(3));
        }
        if !reached {
            // The certified thresholds are still worth having; the others keep their values.
            eprintln!(
                "warning: writing only the tiers that got a threshold; the others keep their \
                 min_confidence unchanged (uncertified, see above)"
            );
        }
        let path = &args.input.config;
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let bytes = std::fs::read(&data.path)
            .with_context(|| format!("cannot read {}", data.path.display()))?;
        let digest = hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&bytes));
        let date = humantime::format_rfc3339_seconds(std::time::SystemTime::now());
        let file_name = data.path.file_name().map_or_else(
            || data.path.display().to_string(),
            |n| n.to_string_lossy().into_owned(),
        );
        let note = format!(
            "calibrated {date} by tierhost calibrate {method} on {file_name} ({} rows, sha256 {})",
            data.rows.len(),
            &digest[..12]
        );
        let updated = eval::write_thresholds(&text, &thresholds, &note)?;
        // The config is replaced in one rename: a serving host watching it never reads half.
        let tmp = path.with_extension("toml.calibrate-tmp");
        std::fs::write(&tmp, updated).with_context(|| format!("cannot write {}", tmp.display()))?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("cannot replace {}", path.display()))?;
        Config::load(path).with_context(|| {
            format!(
                "{} no longer loads after --write (a bug: please report it)",
                path.display()
            )
        })?;
        println!(
            "# wrote {} threshold(s) into {}",
            thresholds.len(),
            path.display()
        );
    }
    // Exit 3: a target no threshold reaches on this data (with --write, the tiers that got a
    // threshold were still written).
    Ok(if reached {
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
