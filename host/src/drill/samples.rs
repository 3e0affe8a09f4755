//! The sample requests a drill replays: JSON lines, the rows of a labeled CSV, or the
//! config's `cascade.check_samples`.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::config::Config;
use crate::drill::DrillError;
use crate::eval::read_labeled_csv;
use crate::request::Request;

/// Reads JSON-lines requests (blank lines skipped).
pub fn read_requests(path: &Path) -> Result<Vec<Request>, DrillError> {
    let text = std::fs::read_to_string(path).map_err(|error| DrillError::Read {
        path: path.to_path_buf(),
        error,
    })?;
    parse_requests(&text, path)
}

/// Parses JSON-lines requests (blank lines skipped); `path` names the text in errors.
pub fn parse_requests(text: &str, path: &Path) -> Result<Vec<Request>, DrillError> {
    text.lines()
        .enumerate()
        .filter(|(_, l)| !l.trim().is_empty())
        .map(|(i, l)| {
            Request::from_json(l).map_err(|error| DrillError::Sample {
                path: path.to_path_buf(),
                line: i + 1,
                error,
            })
        })
        .collect()
}

/// The default sample set: the config's `cascade.check_samples`, resolved.
pub fn default_samples(config: &Config) -> Result<PathBuf, DrillError> {
    config
        .cascade
        .check_samples
        .as_ref()
        .map(|p| config.resolve(p))
        .ok_or_else(|| {
            DrillError::NoSamples(format!(
                "{} has no cascade.check_samples; pass --samples FILE.jsonl or --data FILE.csv",
                config.source.display()
            ))
        })
}

/// Where the sample requests of a drill come from.
#[derive(Debug, Clone)]
pub enum SampleSource {
    /// JSON lines, one request a line.
    Jsonl(PathBuf),
    /// A labeled CSV, read as for `eval`; the label column is dropped.
    Csv {
        /// The file.
        path: PathBuf,
        /// The label column.
        label_column: String,
        /// The label mapping (accepted for symmetry with `eval`; labels are not used).
        labels: BTreeMap<String, String>,
    },
    /// The config's `cascade.check_samples` ([`default_samples`]).
    CheckSamples,
}

/// The sample requests of a drill and where they came from.
#[derive(Debug, Clone)]
pub struct Samples {
    /// The file, and `(first N of M)` when only the first N of its M requests are kept.
    pub source: String,
    /// The requests.
    pub requests: Vec<Request>,
}

impl Samples {
    /// Reads the sample requests of `config`'s drill from `source`, keeping the first `max`.
    pub fn load(config: &Config, source: &SampleSource, max: usize) -> Result<Self, DrillError> {
        let (path, mut requests) = match source {
            SampleSource::Jsonl(path) => (path.clone(), read_requests(path)?),
            SampleSource::Csv {
                path,
                label_column,
                labels,
            } => {
                let rows = read_labeled_csv(path, label_column, labels)?;
                (path.clone(), rows.into_iter().map(|r| r.request).collect())
            }
            SampleSource::CheckSamples => {
                let path = default_samples(config)?;
                let requests = read_requests(&path)?;
                (path, requests)
            }
        };
        let available = requests.len();
        requests.truncate(max);
        let source = if available > requests.len() {
            format!(
                "{} (first {} of {available})",
                path.display(),
                requests.len()
            )
        } else {
            path.display().to_string()
        };
        Ok(Self { source, requests })
    }
}
