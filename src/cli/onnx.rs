//! `steward import` and `steward export`: ONNX in and out, on files.

use std::path::PathBuf;

use super::{load_model, Failure, TaskArg};
use crate::data::Table;
use crate::model::artifact;
use crate::onnx::{self, ImportOptions, OnnxError};

/// `steward import`.
#[derive(Debug, clap::Args)]
pub struct ImportArgs {
    /// The ONNX file: an MLP-shaped graph (PyTorch, skl2onnx).
    #[arg(long)]
    pub onnx: PathBuf,
    /// A CSV of the graph's features (header names, in input order) and the
    /// label: the schema, the drift reference and the rows the import is checked on.
    #[arg(long)]
    pub data: PathBuf,
    /// The label column.
    #[arg(long, default_value = "label")]
    pub label: String,
    /// Force the task of a graph that ends in a layer (logits or a value).
    #[arg(long, value_enum)]
    pub task: Option<TaskArg>,
    /// Class labels in the graph's output order, comma-separated, when the graph
    /// does not name them (default: the CSV's labels, in numeric order when
    /// they are all integers).
    #[arg(long, value_delimiter = ',')]
    pub classes: Option<Vec<String>>,
    /// Largest difference allowed between the converted network and the graph
    /// on the CSV rows, relative to max(1, |value|).
    #[arg(long, default_value_t = 1e-5)]
    pub tolerance: f64,
    /// The metric the int8 form may lose on the CSV rows (else none is kept).
    #[arg(long, default_value_t = 0.01)]
    pub max_metric_drop: f64,
    /// Keep the f32 network only: no int8 form.
    #[arg(long)]
    pub no_compress: bool,
    /// Where to write the artifact (default: the ONNX file's name with `.safetensors`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Send the files to a running daemon (POST /v1/models) instead of writing an
    /// artifact; the token comes from STEWARD_TOKEN.
    #[arg(long)]
    pub url: Option<String>,
    /// With --url: make the new version live at once.
    #[arg(long, requires = "url")]
    pub activate: bool,
    /// One JSON document (the report) on stdout.
    #[arg(long)]
    pub json: bool,
}

impl ImportArgs {
    pub fn options(&self) -> Result<ImportOptions, Failure> {
        if !(0.0..=1.0).contains(&self.max_metric_drop) {
            return Err(Failure::Input(anyhow::anyhow!(
                "--max-metric-drop {}: must be between 0 and 1",
                self.max_metric_drop
            )));
        }
        if !(self.tolerance > 0.0 && self.tolerance.is_finite()) {
            return Err(Failure::Input(anyhow::anyhow!(
                "--tolerance {}: must be a positive number",
                self.tolerance
            )));
        }
        Ok(ImportOptions {
            task: self.task.map(Into::into),
            classes: self.classes.clone(),
            tolerance: self.tolerance,
            max_metric_drop: (!self.no_compress).then_some(self.max_metric_drop),
            ..ImportOptions::new(&self.label)
        })
    }
}

/// `steward export`.
#[derive(Debug, clap::Args)]
#[command(group(clap::ArgGroup::new("source").required(true).args(["model", "version"])))]
pub struct ExportArgs {
    /// A model artifact.
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// A version in the registry of the config's database.
    #[arg(long)]
    pub version: Option<String>,
    /// Where to write the ONNX file.
    #[arg(long)]
    pub onnx: PathBuf,
    /// One JSON document (what the graph's input slots are) on stdout.
    #[arg(long)]
    pub json: bool,
}

pub fn onnx_failure(e: OnnxError) -> Failure {
    match e {
        OnnxError::Check { .. } => Failure::Other(e.into()),
        OnnxError::Train(t) if !t.is_input() => Failure::Other(t.into()),
        e => Failure::Input(e.into()),
    }
}

/// Reads the two files, or says which cannot be read.
pub fn read_inputs(args: &ImportArgs) -> Result<(Vec<u8>, Table), Failure> {
    let bytes = std::fs::read(&args.onnx).map_err(|e| {
        Failure::Input(anyhow::anyhow!("{}: cannot read: {e}", args.onnx.display()))
    })?;
    let table = Table::read(&args.data).map_err(|e| Failure::Input(e.into()))?;
    Ok((bytes, table))
}

pub fn import_command(args: ImportArgs) -> Result<(), Failure> {
    if let Some(url) = &args.url {
        // The daemon imports (POST /v1/models): the files go over, nothing is written here.
        return super::remote::import_command(&args, url);
    }
    let options = args.options()?;
    let (bytes, table) = read_inputs(&args)?;
    let out = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .onnx
            .file_stem()
            .map_or("model".into(), |s| s.to_os_string());
        PathBuf::from(stem).with_extension("safetensors")
    });
    let started = std::time::Instant::now();
    let file = args.onnx.display().to_string();
    let mut imported = onnx::import(&file, &bytes, &table, &options).map_err(onnx_failure)?;
    let took = started.elapsed();
    imported.report.model = Some(out.display().to_string());
    imported.model.meta.training["import"]["model"] = out.display().to_string().into();
    artifact::save(&imported.model, &out).map_err(|e| Failure::Other(e.into()))?;
    let r = &imported.report;
    if args.json {
        let text = serde_json::to_string(r).map_err(|e| Failure::Other(e.into()))?;
        println!("{text}");
    }
    eprintln!(
        "{}: {} ({}), {} → {} layers {:?}, hidden {:?}, output {:?}{}; encoding from the {}",
        r.source,
        r.producer,
        r.opsets
            .iter()
            .map(|(d, v)| format!("{d} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        r.input,
        r.layers.len(),
        r.layers,
        r.activations,
        r.output_function,
        if r.output_function_added {
            " (added to the graph's logits)"
        } else {
            ""
        },
        r.encoding
    );
    eprintln!(
        "checked on {} rows of {}: largest difference {:.2e} (tolerance {:e}); {} = {:.4}{}",
        r.check.rows,
        r.data,
        r.check.max_abs_diff,
        r.check.tolerance,
        r.metric,
        r.value,
        r.value_int8
            .map_or(String::new(), |v| format!(", int8 {v:.4}")),
    );
    eprintln!(
        "wrote {} ({} bits) in {:.0} ms",
        out.display(),
        r.bits,
        took.as_secs_f64() * 1e3
    );
    Ok(())
}

pub fn export_command(args: ExportArgs, config: Option<PathBuf>) -> Result<(), Failure> {
    let (model, version) = match (&args.model, &args.version) {
        (Some(path), _) => (load_model(path)?, None),
        (None, Some(v)) => (registry_model(v, config)?, Some(v.clone())),
        (None, None) => {
            return Err(Failure::Input(anyhow::anyhow!(
                "give --model FILE or --version V"
            )))
        }
    };
    let (bytes, report) = onnx::export::export(&model, version.as_deref())
        .map_err(|e| Failure::Other(anyhow::anyhow!(e)))?;
    artifact::write_atomically(&args.onnx, &bytes).map_err(|e| {
        Failure::Other(anyhow::anyhow!(
            "{}: cannot write: {e}",
            args.onnx.display()
        ))
    })?;
    if args.json {
        let text = serde_json::to_string(&report).map_err(|e| Failure::Other(e.into()))?;
        println!("{text}");
    }
    eprintln!(
        "wrote {} ({} bytes, opset {}): input `{}` [batch, {}], output `{}`",
        args.onnx.display(),
        report.bytes,
        report.opset,
        report.input,
        report.slots.len(),
        report.output
    );
    Ok(())
}

/// The artifact of `version` in the registry of the config's database.
fn registry_model(version: &str, config: Option<PathBuf>) -> Result<crate::model::Model, Failure> {
    let c = crate::config::Config::load(config.as_deref()).map_err(|e| Failure::Input(e.into()))?;
    if let Some(path) = c.database_at.sqlite_path().filter(|p| !p.exists()) {
        return Err(Failure::Input(anyhow::anyhow!(
            "{}: no database here, so no registry (database.url in {})",
            path.display(),
            c.source
        )));
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::Other(e.into()))?;
    let record = runtime.block_on(async {
        let store = crate::store::open_at(&c.database_at).await?;
        crate::store::registry::get(&store, version).await
    });
    match record {
        Ok(Some(r)) => load_model(std::path::Path::new(&r.path)),
        Ok(None) => Err(Failure::Input(anyhow::anyhow!(
            "no model version `{version}` in the registry of {}",
            c.database.url
        ))),
        Err(e) => Err(Failure::Other(e.into())),
    }
}
