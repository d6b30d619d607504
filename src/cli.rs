//! The command line (clap): `serve`, `check-config`, `inspect`, `train`, `eval`,
//! `drift`, `import` and `export` (ONNX, in [`onnx`]), and the operator's commands
//! for a running daemon, `models`, `activate`, `retrain`, `upload` (in [`remote`],
//! over [`client`]). Each command
//! returns a [`Failure`] that says which exit code it deserves: 2 for usage or bad
//! input (a file missing or malformed, an invalid config), 1 for anything else.
//! With `--json`, exactly one JSON document goes to stdout; human text to stderr.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod client;
mod onnx;
mod remote;

use crate::config::Config;
use crate::daemon::{self, DaemonError};
use crate::data::Table;
use crate::model::artifact::{self, ArtifactError};
use crate::model::Task;
use crate::train::{self, select, TrainError};

/// steward keeps one machine-learning model healthy in production.
#[derive(Debug, Parser)]
#[command(name = "steward", version, about)]
pub struct Cli {
    /// Config file for serve, check-config and notify-test (default:
    /// config/steward.toml if it exists, else the embedded defaults). Given
    /// before or after the command, or as STEWARD_CONFIG.
    #[arg(long, global = true, env = "STEWARD_CONFIG")]
    pub config: Option<PathBuf>,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon.
    Serve,
    /// Load and validate the config, and check what it points at as serve
    /// would; print the effective values (secrets masked).
    CheckConfig,
    /// k-fold CV over the candidate grid, fit the winner on all rows, write the artifact.
    Train(TrainArgs),
    /// Score a model artifact on labelled data.
    Eval(EvalArgs),
    /// The daemon's drift tests, offline: every column of the reference CSV against
    /// the same column of the current CSV.
    Drift(DriftArgs),
    /// Send one test mail through the configured alert transport and report
    /// success or the error in one line.
    NotifyTest,
    /// Print a model artifact's card: schema, layers, sparsity, bits, size, metrics.
    Inspect(InspectArgs),
    /// Turn an ONNX graph trained elsewhere (PyTorch, scikit-learn) into a
    /// steward model artifact, checked against the graph on the CSV's rows.
    Import(onnx::ImportArgs),
    /// Write a stored model as an ONNX file (the f32 network, with the numeric
    /// standardisation as graph nodes).
    Export(onnx::ExportArgs),
    /// List a running daemon's model versions (GET /v1/models).
    Models(remote::ModelsArgs),
    /// Make a stored version live in a running daemon (roll back or forward).
    Activate(remote::ActivateArgs),
    /// Start a retraining run in a running daemon; --wait follows it to the end.
    Retrain(remote::RetrainArgs),
    /// Register a steward model artifact with a running daemon (POST /v1/models).
    Upload(remote::UploadArgs),
}

/// `steward train`.
#[derive(Debug, clap::Args)]
pub struct TrainArgs {
    /// Labelled CSV: a header row, the label column, every other column a feature.
    #[arg(long)]
    pub data: PathBuf,
    /// The label column.
    #[arg(long, default_value = "label")]
    pub label: String,
    /// Force the task instead of inferring it from the label column.
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Cross-validation folds.
    #[arg(long, default_value_t = 5)]
    pub folds: usize,
    /// Seed for folds, initialisation and shuffling.
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    /// The metric the compressed model may lose against the uncompressed one.
    #[arg(long, default_value_t = 0.01)]
    pub max_metric_drop: f64,
    /// Keep the f32 model as trained: no pruning, no int8.
    #[arg(long)]
    pub no_compress: bool,
    /// Where to write the artifact (default: the data file's name with
    /// `.safetensors`, in the current directory).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// One JSON document (the report) on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `steward eval`.
#[derive(Debug, clap::Args)]
pub struct EvalArgs {
    #[arg(long)]
    pub model: PathBuf,
    #[arg(long)]
    pub data: PathBuf,
    /// The label column (default: the one the model was trained on).
    #[arg(long)]
    pub label: Option<String>,
    #[arg(long)]
    pub json: bool,
}

/// `steward drift`.
#[derive(Debug, clap::Args)]
pub struct DriftArgs {
    #[arg(long)]
    pub reference: PathBuf,
    #[arg(long)]
    pub current: PathBuf,
    /// Significance level for the corrected p-values.
    #[arg(long, default_value_t = 0.05)]
    pub alpha: f64,
    /// Multiple-testing correction across features.
    #[arg(long, value_enum, default_value = "bonferroni")]
    pub correction: CorrectionArg,
    /// Columns not to test (e.g. the label); repeat for several.
    #[arg(long)]
    pub exclude: Vec<String>,
    /// One JSON document (the report) on stdout.
    #[arg(long)]
    pub json: bool,
    /// Also write the report as one self-contained HTML file: a summary, every
    /// feature's numbers (drifted first) and its distribution chart. The page
    /// loads nothing from anywhere. Combines with --json and the text summary.
    #[arg(long, value_name = "OUT")]
    pub html: Option<PathBuf>,
}

/// `steward inspect`.
#[derive(Debug, clap::Args)]
pub struct InspectArgs {
    #[arg(long)]
    pub model: PathBuf,
    /// One JSON document on stdout.
    #[arg(long)]
    pub json: bool,
}

/// `--task` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum TaskArg {
    Classification,
    Regression,
}

impl From<TaskArg> for Task {
    fn from(t: TaskArg) -> Task {
        match t {
            TaskArg::Classification => Task::Classification,
            TaskArg::Regression => Task::Regression,
        }
    }
}

/// `--correction` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum CorrectionArg {
    Bonferroni,
    Bh,
    None,
}

/// A failed command and the exit code it maps to.
#[derive(Debug)]
pub enum Failure {
    /// Exit code 2: the user's input is wrong.
    Input(anyhow::Error),
    /// Exit code 1.
    Other(anyhow::Error),
}

impl Failure {
    pub fn exit_code(&self) -> ExitCode {
        match self {
            Failure::Input(_) => ExitCode::from(2),
            Failure::Other(_) => ExitCode::from(1),
        }
    }

    pub fn error(&self) -> &anyhow::Error {
        match self {
            Failure::Input(e) | Failure::Other(e) => e,
        }
    }
}

/// Runs one command.
pub fn run(cli: Cli) -> Result<(), Failure> {
    let config = cli.config;
    match cli.command {
        Command::Serve => serve(config),
        Command::CheckConfig => check_config(config),
        Command::NotifyTest => notify_test(config),
        Command::Train(args) => train_command(args),
        Command::Eval(args) => eval_command(args),
        Command::Drift(args) => drift_command(args),
        Command::Inspect(args) => inspect_command(args),
        Command::Import(args) => onnx::import_command(args),
        Command::Export(args) => onnx::export_command(args, config),
        Command::Models(args) => remote::models_command(args),
        Command::Activate(args) => remote::activate_command(args),
        Command::Retrain(args) => remote::retrain_command(args),
        Command::Upload(args) => remote::upload_command(args),
    }
}

fn check_config(config: Option<PathBuf>) -> Result<(), Failure> {
    let c = Config::load(config.as_deref()).map_err(|e| Failure::Input(e.into()))?;
    crate::preflight::check(&c).map_err(|e| Failure::Input(e.into()))?;
    print!("{}", c.render_masked());
    eprintln!("config ok: {}", c.source);
    Ok(())
}

fn train_command(args: TrainArgs) -> Result<(), Failure> {
    let TrainArgs {
        data,
        label,
        task,
        folds,
        seed,
        max_metric_drop,
        no_compress,
        out,
        json,
    } = args;
    let out = out.unwrap_or_else(|| {
        let stem = data
            .file_stem()
            .map_or("model".into(), |s| s.to_os_string());
        PathBuf::from(stem).with_extension("safetensors")
    });
    if !(0.0..=1.0).contains(&max_metric_drop) {
        return Err(Failure::Input(anyhow::anyhow!(
            "--max-metric-drop {max_metric_drop}: must be between 0 and 1"
        )));
    }
    let options = select::TrainOptions {
        task: task.map(Task::from),
        max_metric_drop: (!no_compress).then_some(max_metric_drop),
        ..select::TrainOptions::new(&label, folds, seed)
    };
    let started = std::time::Instant::now();
    let table = Table::read(&data).map_err(|e| Failure::Input(e.into()))?;
    let mut trained = select::train(&table, &options).map_err(train_failure)?;
    trained.report.model = Some(out.display().to_string());
    artifact::save(&trained.model, &out).map_err(|e| Failure::Other(e.into()))?;
    let report = &trained.report;
    if json {
        let text = serde_json::to_string(report).map_err(|e| Failure::Other(e.into()))?;
        println!("{text}");
    }
    eprintln!("{}", human_train_report(report, started.elapsed()));
    Ok(())
}

fn eval_command(args: EvalArgs) -> Result<(), Failure> {
    let EvalArgs {
        model,
        data,
        label,
        json,
    } = args;
    let m = load_model(&model)?;
    let table = Table::read(&data).map_err(|e| Failure::Input(e.into()))?;
    let label = label.unwrap_or_else(|| m.meta.label.clone());
    let report = train::evaluate(&m, &table, &label).map_err(train_failure)?;
    let mut doc = serde_json::to_value(&report).map_err(|e| Failure::Other(e.into()))?;
    doc["model"] = model.display().to_string().into();
    if json {
        println!("{doc}");
    }
    eprintln!(
        "{}: {} = {:.4} on {} rows of {} (label `{}`)",
        model.display(),
        report.metric,
        report.value,
        report.rows,
        data.display(),
        report.label
    );
    Ok(())
}

fn drift_command(args: DriftArgs) -> Result<(), Failure> {
    let DriftArgs {
        reference,
        current,
        alpha,
        correction,
        exclude,
        json,
        html,
    } = args;
    use crate::{monitor::drift, stats::Correction};
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(Failure::Input(anyhow::anyhow!(
            "--alpha {alpha}: must be between 0 and 1"
        )));
    }
    let r = Table::read(&reference).map_err(|e| Failure::Input(e.into()))?;
    let c = Table::read(&current).map_err(|e| Failure::Input(e.into()))?;
    let columns = drift::table_values(&r, &c, &exclude).map_err(|e| Failure::Input(e.into()))?;
    let options = drift::DriftOptions {
        alpha,
        correction: match correction {
            CorrectionArg::Bonferroni => Correction::Bonferroni,
            CorrectionArg::Bh => Correction::BenjaminiHochberg,
            CorrectionArg::None => Correction::None,
        },
        ..drift::DriftOptions::default()
    };
    let report = drift::compare(
        &columns.names,
        &columns.reference,
        &columns.current,
        &options,
    )
    .map_err(|e| Failure::Input(anyhow::anyhow!("{}: {e}", reference.display())))?;
    // The page first: if it cannot be written, stdout stays empty.
    if let Some(out) = &html {
        let context = crate::report::Context {
            reference: &reference.display().to_string(),
            current: &current.display().to_string(),
            generated: &crate::time::now_rfc3339(),
        };
        let page =
            crate::report::drift_html(&report, &context).map_err(|e| Failure::Other(e.into()))?;
        artifact::write_atomically(out, page.as_bytes())
            .map_err(|e| Failure::Other(anyhow::anyhow!("{}: cannot write: {e}", out.display())))?;
    }
    if json {
        let text = serde_json::to_string(&report).map_err(|e| Failure::Other(e.into()))?;
        println!("{text}");
    }
    for f in &report.features {
        eprintln!(
            "{:<24} {:<11} {:<4} statistic {:>8} p {:>10} p_adj {:>10} psi {:>7} {}",
            f.name,
            f.kind,
            f.test,
            f.statistic.map_or("-".into(), |v| format!("{v:.4}")),
            f.p_value.map_or("-".into(), |v| format!("{v:.3e}")),
            f.p_adjusted.map_or("-".into(), |v| format!("{v:.3e}")),
            f.psi.map_or("-".into(), |v| format!("{v:.3}")),
            if f.drift { "DRIFT" } else { "" }
        );
    }
    eprintln!(
        "{} of {} features drift (alpha {}, {:?}); dataset drift: {}",
        report.drifted,
        report.features.len(),
        report.alpha,
        report.correction,
        report.dataset_drift
    );
    if let Some(out) = &html {
        eprintln!("report written to {}", out.display());
    }
    Ok(())
}

fn inspect_command(args: InspectArgs) -> Result<(), Failure> {
    let InspectArgs { model, json } = args;
    let m = load_model(&model)?;
    let size = std::fs::metadata(&model).ok().map(|m| m.len());
    let card = m.card(None, Some(&model.display().to_string()), size);
    if json {
        println!("{card}");
    } else {
        eprintln!("{}", human_card(&card));
    }
    Ok(())
}

fn load_model(path: &std::path::Path) -> Result<crate::model::Model, Failure> {
    artifact::load(path).map_err(|e| match e {
        ArtifactError::Write { .. } => Failure::Other(e.into()),
        _ => Failure::Input(e.into()),
    })
}

fn train_failure(e: TrainError) -> Failure {
    if e.is_input() {
        Failure::Input(e.into())
    } else {
        Failure::Other(e.into())
    }
}

fn human_train_report(r: &select::TrainReport, took: std::time::Duration) -> String {
    let mut lines = vec![format!(
        "{} on `{}`: {} rows, {} features, {}-fold CV, seed {}",
        match r.task {
            Task::Classification => "classification",
            Task::Regression => "regression",
        },
        r.label,
        r.rows,
        r.features,
        r.cv.folds,
        r.seed
    )];
    for c in &r.candidates {
        let chosen = if c.candidate == r.selected { "*" } else { " " };
        lines.push(match (c.cv_mean, c.cv_std, &c.error) {
            (Some(m), Some(s), _) => format!(
                " {chosen} {:<40} {} {m:.4} ± {s:.4}  ({} parameters)",
                c.candidate.name(),
                r.cv.metric,
                c.parameters
            ),
            (_, _, e) => format!(
                " {chosen} {:<40} failed: {}",
                c.candidate.name(),
                e.as_deref().unwrap_or("?")
            ),
        });
    }
    let c = &r.compressed;
    lines.push(format!(
        "compression ({}): {} bits, sparsity {:.2}, hidden {:?} → {:?}, {} → {} bytes, {} {:.4} → {:.4} on {} held-out rows",
        c.method,
        c.bits,
        c.sparsity,
        c.hidden_before,
        c.hidden_after,
        c.size_bytes_f32,
        c.size_bytes,
        r.cv.metric,
        c.metric_before,
        c.metric_after,
        c.held_out_rows
    ));
    lines.push(format!(
        "selected {}: {} {:.4} ± {:.4}; model written to {} in {:.1} s",
        r.selected.name(),
        r.cv.metric,
        r.cv.mean,
        r.cv.std,
        r.model.as_deref().unwrap_or("?"),
        took.as_secs_f64()
    ));
    lines.join("\n")
}

fn notify_test(config: Option<PathBuf>) -> Result<(), Failure> {
    use crate::alert::mail::{MailError, Mailer};
    let c = Config::load(config.as_deref()).map_err(|e| Failure::Input(e.into()))?;
    let mailer = Mailer::from_config(&c).map_err(|e| match e {
        MailError::Config(_) | MailError::CaFile { .. } => Failure::Input(e.into()),
        _ => Failure::Other(e.into()),
    })?;
    let now = crate::time::now_millis();
    let subject = format!("[steward] test mail from {}", c.base_url());
    let text = format!(
        "{subject}\n\nsteward sent this with `steward notify-test` at {}. Alert mail reaches you \
         through {}.\n",
        crate::time::rfc3339(now),
        mailer.describe
    );
    let mail = crate::store::alerts::Mail {
        id: 0,
        created: now,
        group_key: "test".into(),
        kind: "test".into(),
        subject,
        body_html: format!(
            "<html><body><p>{}</p></body></html>\n",
            crate::alert::compose::esc(&text)
        ),
        body_text: text,
        message_id: format!("{}@{}", uuid::Uuid::now_v7(), mailer.domain()),
        thread: "[]".into(),
        recipients: serde_json::to_string(&c.alerts.to).unwrap_or_default(),
        state: crate::store::alerts::MailState::Pending,
        attempts: 0,
        next_attempt: now,
        last_error: None,
        sent_at: None,
        images: Vec::new(),
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.into()))?;
    match runtime.block_on(mailer.send(&mail)) {
        Ok(()) => {
            println!(
                "sent a test mail to {} via {}",
                if c.alerts.to.is_empty() {
                    "(no recipients)".to_string()
                } else {
                    c.alerts.to.join(", ")
                },
                mailer.describe
            );
            Ok(())
        }
        Err(e) => Err(Failure::Other(anyhow::anyhow!(
            "notify-test: not sent via {}: {}",
            mailer.describe,
            e.message
        ))),
    }
}

fn serve(config: Option<PathBuf>) -> Result<(), Failure> {
    use crate::app::AppError;
    let c = Config::load(config.as_deref()).map_err(|e| Failure::Input(e.into()))?;
    let levels = crate::logging::init(c.log_format, &c.log.level);
    let arenas_capped = crate::memory::limit_arenas();
    tracing::debug!(arenas_capped, "malloc arenas");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.into()))?;
    let result = runtime.block_on(daemon::run(c, config, levels));
    // Everything is written by now; a retraining thread still running is not
    // waited for (it cannot be interrupted, and its run is marked failed).
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    result.map_err(|e| match e {
        DaemonError::Config(_)
        | DaemonError::Preflight(_)
        | DaemonError::App(
            AppError::Live(
                crate::live::LiveError::Artifact(_) | crate::live::LiveError::Active { .. },
            )
            | AppError::Mail(
                crate::alert::mail::MailError::Config(_)
                | crate::alert::mail::MailError::CaFile { .. },
            ),
        ) => Failure::Input(e.into()),
        _ => Failure::Other(e.into()),
    })
}

fn human_card(card: &serde_json::Value) -> String {
    let get = |k: &str| card.get(k).cloned().unwrap_or_default();
    let layers: Vec<String> = get("layers")
        .as_array()
        .map(|ls| {
            ls.iter()
                .map(|l| format!("{}→{}", l["inputs"], l["outputs"]))
                .collect()
        })
        .unwrap_or_default();
    let features: Vec<String> = get("schema")
        .as_array()
        .map(|fs| {
            fs.iter()
                .map(|f| {
                    format!(
                        "  {} ({})",
                        f["name"].as_str().unwrap_or("?"),
                        f["kind"].as_str().unwrap_or("?")
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    format!(
        "model: {}\ntask: {}  label: {}  classes: {}\noutput: {}  layers: {}  hidden activations: {}\nparameters: {}  sparsity: {}  bits: {}  file: {} bytes  serving weights: {} bytes f32, {} bytes int8\nmetrics: {}\ncreated: {}\nfeatures:\n{}",
        get("path"),
        get("task"),
        get("label"),
        get("classes"),
        get("output"),
        layers.join(", "),
        get("activations"),
        get("parameters"),
        get("sparsity"),
        get("bits"),
        get("size_bytes"),
        get("serving_bytes")["f32"],
        get("serving_bytes")["int8"],
        get("metrics"),
        get("created"),
        features.join("\n")
    )
}
