//! Labeled data: CSV rows turned into requests with their true label, and the label mapping
//! (`1=phishing,0=legitimate`) that names the CSV's classes as the cascade does.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::eval::EvalError;
use crate::request::{FeatureValue, Request};

/// One labeled row.
#[derive(Debug, Clone)]
pub struct LabeledRow {
    /// The request built from the row's features.
    pub request: Request,
    /// The true label.
    pub label: String,
}

/// Labeled rows and the file they came from.
#[derive(Debug, Clone)]
pub struct Dataset {
    /// The CSV file.
    pub path: PathBuf,
    /// Its rows, in file order.
    pub rows: Vec<LabeledRow>,
}

impl Dataset {
    /// Reads a labeled CSV file (see [`read_labeled_csv`]).
    pub fn read(
        path: &Path,
        label_column: &str,
        labels: &BTreeMap<String, String>,
    ) -> Result<Self, EvalError> {
        Ok(Self {
            path: path.to_path_buf(),
            rows: read_labeled_csv(path, label_column, labels)?,
        })
    }
}

/// Parses a label mapping `VALUE=LABEL,VALUE=LABEL` (e.g. `1=phishing,0=legitimate`); empty
/// entries are skipped, so `""` is the empty mapping.
pub fn parse_labels(spec: &str) -> Result<BTreeMap<String, String>, EvalError> {
    spec.split(',')
        .filter(|pair| !pair.trim().is_empty())
        .map(|pair| match pair.split_once('=') {
            Some((from, to)) => Ok((from.trim().to_string(), to.trim().to_string())),
            None => Err(EvalError::Labels(pair.to_string())),
        })
        .collect()
}

/// Reads a CSV file with a header; `label_column` holds the truth, mapped through `labels`
/// (e.g. `1` -> `phishing`); every other column is a feature (numbers as floats, empty cells
/// as null, anything else as text).
pub fn read_labeled_csv(
    path: &Path,
    label_column: &str,
    labels: &BTreeMap<String, String>,
) -> Result<Vec<LabeledRow>, EvalError> {
    let csv_error = |row, error| EvalError::Csv {
        path: path.to_path_buf(),
        row,
        error,
    };
    let mut reader = csv::Reader::from_path(path).map_err(|e| csv_error(None, e))?;
    let headers = reader.headers().map_err(|e| csv_error(None, e))?.clone();
    let label_at = headers
        .iter()
        .position(|h| h == label_column)
        .ok_or_else(|| EvalError::NoLabelColumn {
            path: path.to_path_buf(),
            column: label_column.to_string(),
            header: headers.iter().map(str::to_string).collect(),
        })?;
    let mut rows = Vec::new();
    for (i, record) in reader.records().enumerate() {
        // Row numbers as an editor shows them: the header is line 1.
        let line = i + 2;
        let record = record.map_err(|e| csv_error(Some(line), e))?;
        let mut features = Vec::with_capacity(record.len());
        let mut label = None;
        for (j, (name, cell)) in headers.iter().zip(record.iter()).enumerate() {
            if j == label_at {
                label = Some(
                    labels
                        .get(cell)
                        .cloned()
                        .unwrap_or_else(|| cell.to_string()),
                );
                continue;
            }
            let value = if cell.is_empty() {
                FeatureValue::Null
            } else if let Ok(x) = cell.parse::<f64>() {
                FeatureValue::Float(x)
            } else {
                FeatureValue::Text(cell.to_string())
            };
            features.push((name.to_string(), value));
        }
        let label = label.ok_or_else(|| EvalError::NoLabel {
            path: path.to_path_buf(),
            row: line,
        })?;
        rows.push(LabeledRow {
            request: Request::new(format!("row-{}", i + 1), features),
            label,
        });
    }
    if rows.is_empty() {
        return Err(EvalError::NoRows(path.to_path_buf()));
    }
    Ok(rows)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_mappings_parse_and_refuse_pairs_without_a_value() {
        let labels = parse_labels("1=phishing, 0 = legitimate,").unwrap();
        assert_eq!(labels["1"], "phishing");
        assert_eq!(labels["0"], "legitimate");
        assert!(parse_labels("").unwrap().is_empty());
        let error = parse_labels("1=phishing,0").unwrap_err();
        assert_eq!(error.to_string(), "`0` is not VALUE=LABEL");
    }
}
