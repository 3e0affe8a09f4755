//! The `tierhost` binary's arguments (clap). Part of the binary, not of the library: the
//! library's modules are declared in `lib.rs`; this file is declared by `main.rs`.
use std::path::PathBuf;

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(
    name = "tierhost",
    version,
    about = "Answer inference requests through a cascade of sandboxed wasm fallback tiers"
)]
pub(crate) struct Cli {
    #[command(subcommand)]
    pub(crate) command: Command,
}

#[derive(Subcommand)]
pub(crate) enum Command {
    /// Load and validate a cascade config and every tier it names; exit 1 on any problem.
    Check {
        /// Cascade config (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Pull every `oci://` plugin of a config into its `[oci] store`, verified by digest (for
    /// pipelines and init containers: the host then starts from the store); prints each
    /// plugin's digest. Exit 1 if any pull fails.
    Pull {
        /// Cascade config (TOML).
        #[arg(long)]
        config: PathBuf,
    },
    /// Push a component (and its `<file>.sig` when present) to an OCI registry as a wasm
    /// artifact; prints the pinned reference to put in a config.
    Push {
        /// The component (.wasm).
        file: PathBuf,
        /// Where: oci://REGISTRY/REPOSITORY:TAG.
        #[arg(long)]
        to: String,
        /// A registry (host:port) to speak plain HTTP to (repeatable), as `[oci] insecure`.
        #[arg(long, value_name = "HOST:PORT")]
        insecure: Vec<String>,
    },
    /// Print what a reload from OLD to NEW would change: tiers added, removed, reordered or
    /// re-versioned (plugin or model bytes), and every setting that differs. Exit 0 when
    /// nothing would change, 1 when something would, 2 on error (like `diff`).
    Diff {
        /// The config serving now (TOML).
        old: PathBuf,
        /// The config a reload would load.
        new: PathBuf,
        /// Print the changes as one JSON document.
        #[arg(long)]
        json: bool,
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
    /// Human review of escalated requests: list the queue, show one item with its trail,
    /// resolve it with a label, export resolved items as labeled training rows.
    Review(ReviewArgs),
    /// Run the embedded fraud cascade (examples/fraud) on sample requests, healthy and with its
    /// primary tier replaced by a tier stuck in an infinite loop.
    Demo {
        /// Print every answer as one JSON line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Scaffold a new project: `tierhost new tier NAME --lang rust|python|js` writes a tier
    /// that builds as generated, with its WIT, SDK, build script, a cascade serving it, sample
    /// requests and a test script.
    New(NewArgs),
    /// Create an ed25519 signing key: writes the private key (PKCS#8 PEM, mode 0600, never
    /// over an existing file) and prints its public key as a line for `[trust]`.
    Keygen {
        /// Where to write the private key.
        #[arg(long)]
        out: PathBuf,
        /// The key's name in `[trust]` (default: the file name without its extension).
        #[arg(long)]
        name: Option<String>,
    },
    /// Sign plugin and model files: writes `<file>.sig` beside each.
    Sign {
        /// The private key: PKCS#8 PEM, from `tierhost keygen` or `openssl genpkey -algorithm
        /// ed25519`.
        #[arg(long)]
        key: PathBuf,
        /// The key's name in `[trust]`, recorded in the signature as a hint (default: the key
        /// file's name without its extension).
        #[arg(long)]
        name: Option<String>,
        /// The files to sign.
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
    /// Check signatures without loading anything: the plugin and model of every tier with
    /// `signed_by` in a config, or files against one public key; exit 1 on any problem.
    Verify {
        /// Cascade config (TOML): check every tier that has `signed_by`.
        #[arg(long, required_unless_present = "pubkey", conflicts_with = "pubkey")]
        config: Option<PathBuf>,
        /// Or a public key (`ed25519:<base64>`, as in `[trust]`) that must have signed FILES.
        #[arg(long, requires = "files")]
        pubkey: Option<String>,
        /// Files to check against `--pubkey` (each with its `<file>.sig`).
        #[arg(conflicts_with = "config")]
        files: Vec<PathBuf>,
    },
    /// Make a tier's shadow candidate its live version on a running server (POST
    /// /admin/tiers/{name}/promote): atomic, the replaced version kept warm for rollback; the
    /// tier's promotion gate applies. Sends `Authorization: Bearer $TIERHOST_ADMIN_TOKEN` when
    /// that variable is set. Exit 1 with the server's reason when it refuses (a gate refusal
    /// names the numbers).
    Promote(RolloutArgs),
    /// Return a tier to the version its last promote replaced, on a running server (POST
    /// /admin/tiers/{name}/rollback); the token as for `promote`. Exit 1 with the server's
    /// reason when it refuses.
    Rollback(RolloutArgs),
    /// Print a tier's shadow report from a running server (GET /v1/tiers/{name}/shadow): the
    /// decision diff between the live version and its candidate, and the gate's verdict.
    Shadow(ShadowArgs),
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

/// `promote` and `rollback`.
#[derive(clap::Args)]
pub(crate) struct RolloutArgs {
    /// The server: its admin listener (`server.admin_listen`) when it has one, else its
    /// listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// The tier.
    #[arg(long)]
    pub(crate) tier: String,
    /// Who asks, for the server's audit line (default: $USER).
    #[arg(long)]
    pub(crate) by: Option<String>,
    /// Print the server's report as JSON instead of a line.
    #[arg(long)]
    pub(crate) json: bool,
}

/// `shadow`.
#[derive(clap::Args)]
pub(crate) struct ShadowArgs {
    /// The server's public listener.
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub(crate) url: String,
    /// The tier.
    #[arg(long)]
    pub(crate) tier: String,
    /// Print the report as the server's JSON document.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Labeled data shared by `eval` and `calibrate`.
#[derive(clap::Args)]
pub(crate) struct DataArgs {
    /// Cascade config (TOML).
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// CSV with a header: feature columns and the label column.
    #[arg(long)]
    pub(crate) data: PathBuf,
    /// Name of the label column.
    #[arg(long, default_value = "label")]
    pub(crate) label_column: String,
    /// Label mapping from CSV values to the cascade's labels, e.g. `1=phishing,0=legitimate`.
    #[arg(long, default_value = "")]
    pub(crate) labels: String,
}

#[derive(clap::Args)]
pub(crate) struct EvalArgs {
    #[command(flatten)]
    pub(crate) input: DataArgs,
    /// Scenario to run (repeatable): normal, primary-down, primary-slow,
    /// primary-slow-no-breaker, primary-garbage,
    /// fault-mix, primary-flapping, primary-heavy-tail, primary-heavy-tail-hedged, repeat,
    /// shift, shift-no-guard. Default: all.
    #[arg(long = "scenario")]
    pub(crate) scenarios: Vec<String>,
    /// The positive class (for AUC). Default: what `1` maps to.
    #[arg(long)]
    pub(crate) positive: Option<String>,
    /// Directory for summary.md, runs.json, tier_mix.svg and accuracy_vs_coverage.svg.
    #[arg(long)]
    pub(crate) report: Option<PathBuf>,
    /// Print the summary as one JSON document on stdout.
    #[arg(long)]
    pub(crate) json: bool,
    /// Request rate the replay stands for: the cascade's clock (breaker windows and open
    /// times, chaos windows) advances by 1/RATE seconds per row.
    #[arg(long, default_value_t = tierhost::eval::DEFAULT_ROWS_PER_S)]
    pub(crate) rate: f64,
    /// Commit the rows one scenario escalates to this review queue (SQLite, created if
    /// missing), under the config's [escalation] settings with FILE as the queue (defaults
    /// when it has none); label them with `tierhost review --queue FILE`, then `review export`
    /// them as training rows. No other run escalates, and eval never writes the config's own
    /// queue.
    #[arg(long, value_name = "FILE")]
    pub(crate) escalations: Option<PathBuf>,
    /// The scenario whose escalations --escalations writes. Default: primary-down when it is
    /// run (the primary fails on every row: what the rest of the cascade cannot answer),
    /// else the first scenario run.
    #[arg(long, value_name = "NAME", requires = "escalations")]
    pub(crate) escalations_scenario: Option<String>,
    /// Run a candidate version in the shadow of a tier and print the decision diff beside the
    /// report (agreement, served differently, score and confidence deltas, faults, latency,
    /// the disagreeing rows' ids): TIER=FILE, FILE a component relative to the current
    /// directory (or builtin:NAME). Repeatable, one candidate per tier. The candidate runs on
    /// every call of its tier during one scenario's replay: `normal` when it is run, else the
    /// first scenario run (add `--scenario normal` to run only that one).
    #[arg(long = "shadow", value_name = "TIER=FILE")]
    pub(crate) shadows: Vec<String>,
    /// Check the risk promise: each tier's error among the answers it keeps at its configured
    /// min_confidence (tiers alone, walked in cascade order), with a Clopper-Pearson interval
    /// at 1 - --delta, judged against this alpha.
    #[arg(long)]
    pub(crate) alpha: Option<f64>,
    /// With --alpha: confidence of the interval and of the conformal calibration, 1 - DELTA.
    #[arg(long, default_value_t = 0.1, requires = "alpha")]
    pub(crate) delta: f64,
    /// With --alpha: N random halvings of the data; `calibrate --method conformal` on one half,
    /// the answered error measured on the other; prints in how many splits each model tier's
    /// error stayed within alpha (the promise: >= 1 - delta of them).
    #[arg(long, value_name = "N", default_value_t = 0, requires = "alpha")]
    pub(crate) bootstrap: usize,
    /// Seed of the bootstrap splits.
    #[arg(long, default_value_t = 0, requires = "alpha")]
    pub(crate) seed: u64,
    /// With --alpha: the rows each tier is judged (and, with --bootstrap, calibrated) on:
    /// `cascade` (in cascade order, the rows no earlier tier kept: every tier healthy) or
    /// `alone` (every row: the tiers before it down, so it serves all the traffic).
    #[arg(long, default_value = "cascade", requires = "alpha")]
    pub(crate) scope: RiskScope,
    /// The training data (CSV, same columns): warn with the count of evaluated rows whose
    /// features equal a training row's (figures on them measure memory, not generalisation).
    #[arg(long, value_name = "FILE")]
    pub(crate) train: Option<PathBuf>,
}

#[derive(clap::Args)]
pub(crate) struct CalibrateArgs {
    #[command(flatten)]
    pub(crate) input: DataArgs,
    /// How thresholds are chosen: `empirical` (the lowest threshold whose kept answers reach
    /// --target-accuracy on this data, each tier alone; a point estimate) or `conformal`
    /// (Learn-then-Test, tiers in cascade order: the error among kept answers is <= --alpha
    /// with probability >= 1 - --delta).
    #[arg(long, default_value = "empirical")]
    pub(crate) method: CalibrationMethod,
    /// `empirical`: accuracy the kept answers must reach, in (0, 1].
    #[arg(long)]
    pub(crate) target_accuracy: Option<f64>,
    /// `conformal`: the largest acceptable error rate among answered requests, in (0, 1).
    #[arg(long)]
    pub(crate) alpha: Option<f64>,
    /// `conformal`: the largest acceptable probability that the guarantee fails, in (0, 1).
    #[arg(long, default_value_t = 0.1)]
    pub(crate) delta: f64,
    /// `conformal`: the rows each model tier is calibrated on: `cascade` (in cascade order,
    /// the rows no earlier tier kept: the guarantee while every tier before it is healthy) or
    /// `alone` (every row: the guarantee while the tiers before it are down and it serves all
    /// the traffic).
    #[arg(long, default_value = "cascade")]
    pub(crate) scope: RiskScope,
    /// Write the thresholds into the config file in place (comments and layout kept; each
    /// value gets a comment saying how it was chosen, on which data, when). Only the tiers
    /// that got a threshold are written (the others keep theirs, and the exit status is 3);
    /// nothing is written when no model tier got one.
    #[arg(long)]
    pub(crate) write: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RiskScope {
    Cascade,
    Alone,
}

impl From<RiskScope> for tierhost::eval::Scope {
    fn from(scope: RiskScope) -> Self {
        match scope {
            RiskScope::Cascade => Self::Cascade,
            RiskScope::Alone => Self::Alone,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum CalibrationMethod {
    Empirical,
    Conformal,
}

#[derive(clap::Args)]
pub(crate) struct DrillArgs {
    /// Cascade config (TOML).
    #[arg(long)]
    pub(crate) config: PathBuf,
    /// Sample requests, JSON lines (default: the config's `cascade.check_samples`).
    #[arg(long, conflicts_with = "data")]
    pub(crate) samples: Option<PathBuf>,
    /// Or sample requests from a labeled CSV (as for `eval`; the label column is dropped).
    #[arg(long)]
    pub(crate) data: Option<PathBuf>,
    /// Name of the CSV's label column.
    #[arg(long, default_value = "label", requires = "data")]
    pub(crate) label_column: String,
    /// Label mapping of the CSV, as for `eval` (accepted for symmetry; labels are not used).
    #[arg(long, default_value = "", requires = "data")]
    pub(crate) labels: String,
    /// Replay the first N sample requests.
    #[arg(long, default_value_t = 50)]
    pub(crate) rows: usize,
    /// Print the report as one JSON document instead of the matrix.
    #[arg(long)]
    pub(crate) json: bool,
}

#[derive(clap::Args)]
pub(crate) struct ReviewArgs {
    /// The escalation queue (SQLite file). Default: `[escalation] queue` of `--config`.
    #[arg(long, conflicts_with = "config", required_unless_present = "config")]
    pub(crate) queue: Option<PathBuf>,
    /// A cascade config whose `[escalation]` section names the queue and the review labels.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    #[command(subcommand)]
    pub(crate) action: ReviewAction,
}

#[derive(Subcommand)]
pub(crate) enum ReviewAction {
    /// Items in the queue (pending: oldest first) with why each tier fell through.
    List {
        /// pending, resolved or all.
        #[arg(long, default_value = "pending")]
        status: ReviewStatus,
        /// Most items shown.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON document instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// One item as JSON: features (after redaction), decision, full trail, resolution.
    Show {
        /// The escalation id (from the answer's `escalation.id` or `review list`).
        id: String,
    },
    /// Label a pending item (who and when are recorded with it).
    Resolve {
        /// The escalation id.
        id: String,
        /// The reviewer's label (one of `escalation.labels` when `--config` sets them).
        #[arg(long)]
        label: String,
        /// A note for whoever reads the label later.
        #[arg(long)]
        note: Option<String>,
        /// Who resolves it (default: $USER).
        #[arg(long)]
        by: Option<String>,
    },
    /// Resolved items as labeled rows: `csv` in the eval layout (feature columns, then the
    /// label column), readable by `tierhost eval --data` and appendable to training data.
    Export {
        /// csv or jsonl.
        #[arg(long, default_value = "csv")]
        format: ExportFormatArg,
        /// Output file (default: stdout).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Name of the label column.
        #[arg(long, default_value = "label")]
        label_column: String,
        /// The eval label mapping, e.g. `1=phishing,0=legitimate`: labels are written back as
        /// the values on the left.
        #[arg(long, default_value = "")]
        labels: String,
    },
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ReviewStatus {
    Pending,
    Resolved,
    All,
}

#[derive(Clone, Copy, clap::ValueEnum)]
pub(crate) enum ExportFormatArg {
    Csv,
    Jsonl,
}

#[derive(clap::Args)]
pub(crate) struct NewArgs {
    #[command(subcommand)]
    pub(crate) what: NewWhat,
}

#[derive(Subcommand)]
pub(crate) enum NewWhat {
    /// A tier project (default directory: ./NAME, which must be new or empty).
    Tier {
        /// Tier name: lowercase letters, digits and inner hyphens (e.g. `card-rules`).
        name: String,
        /// The tier's language.
        #[arg(long, default_value = "rust")]
        lang: crate::scaffold::Lang,
        /// What the tier reports it is (`describe`).
        #[arg(long, default_value = "rules")]
        kind: crate::scaffold::Kind,
        /// Where to write the project (default: ./NAME).
        #[arg(long)]
        dir: Option<PathBuf>,
    },
}
