//! Labelled CSV files: reading, column typing and the errors a user can cause.
//!
//! A CSV has a header row; the label column (default `label`) is the target and every
//! other column is a feature. A column whose non-empty cells all parse as finite
//! numbers is numeric, any other is categorical; an empty cell is a missing value.
//! Errors name the file, the 1-based line and the 1-based column (field number).
//! This module knows nothing of encodings or models: see `model::schema`.

use std::path::Path;

/// Lines longer than this are refused rather than read into memory.
pub const MAX_LINE_BYTES: usize = 1 << 20;

/// Everything that can be wrong with a data file.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    #[error("{path}: cannot read: {source}")]
    Io {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:1:1: the file is empty (a header row is needed)")]
    Empty { path: String },
    #[error("{path}:2:1: the file has a header but no data rows")]
    NoRows { path: String },
    #[error("{path}:1:1: no label column `{label}` (columns: {columns})")]
    MissingLabel {
        path: String,
        label: String,
        columns: String,
    },
    #[error("{path}:{line}:{column}: {message}")]
    At {
        path: String,
        line: u64,
        column: usize,
        message: String,
    },
}

/// The kind of a feature column, decided from its values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ColumnKind {
    Numeric,
    Categorical,
}

/// A CSV read into memory: header, cells (empty string = missing) and the line each
/// row started on.
#[derive(Debug, Clone)]
pub struct Table {
    pub path: String,
    pub headers: Vec<String>,
    pub rows: Vec<Vec<String>>,
    pub lines: Vec<u64>,
}

impl Table {
    /// Reads a CSV file.
    pub fn read(path: &Path) -> Result<Table, DataError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|source| DataError::Io {
            path: name.clone(),
            source,
        })?;
        Self::parse(&name, &bytes)
    }

    /// Parses CSV text named `path` in messages.
    pub fn parse(path: &str, bytes: &[u8]) -> Result<Table, DataError> {
        if bytes.iter().all(|b| b.is_ascii_whitespace()) {
            return Err(DataError::Empty { path: path.into() });
        }
        let at = |line: u64, column: usize, message: String| DataError::At {
            path: path.into(),
            line,
            column,
            message,
        };
        if let Some((line, _)) = bytes
            .split(|b| *b == b'\n')
            .enumerate()
            .find(|(_, l)| l.len() > MAX_LINE_BYTES)
        {
            return Err(at(
                line as u64 + 1,
                1,
                format!("line longer than {MAX_LINE_BYTES} bytes"),
            ));
        }
        let mut reader = csv::ReaderBuilder::new()
            .has_headers(true)
            .flexible(false)
            .from_reader(bytes);
        let headers: Vec<String> = reader
            .headers()
            .map_err(|e| csv_error(path, &e))?
            .iter()
            .map(|h| h.trim().to_string())
            .collect();
        for (i, h) in headers.iter().enumerate() {
            if h.is_empty() {
                return Err(at(1, i + 1, "empty column name".into()));
            }
            if headers[..i].contains(h) {
                return Err(at(1, i + 1, format!("duplicate column name `{h}`")));
            }
        }
        let mut rows = Vec::new();
        let mut lines = Vec::new();
        for record in reader.records() {
            let record = record.map_err(|e| csv_error(path, &e))?;
            let line = record.position().map_or(0, |p| p.line());
            if record.len() == 1 && record.get(0).is_some_and(|c| c.trim().is_empty()) {
                continue; // a blank line
            }
            rows.push(record.iter().map(|c| c.trim().to_string()).collect());
            lines.push(line);
        }
        if rows.is_empty() {
            return Err(DataError::NoRows { path: path.into() });
        }
        Ok(Table {
            path: path.into(),
            headers,
            rows,
            lines,
        })
    }

    /// The index of column `name`, or a `MissingLabel` error.
    pub fn label_index(&self, name: &str) -> Result<usize, DataError> {
        self.headers
            .iter()
            .position(|h| h == name)
            .ok_or_else(|| DataError::MissingLabel {
                path: self.path.clone(),
                label: name.into(),
                columns: self.headers.join(", "),
            })
    }

    /// Decides a column's kind. A cell that parses as a number but is NaN or infinite
    /// is an error: it is almost always a bug upstream.
    pub fn column_kind(&self, column: usize) -> Result<ColumnKind, DataError> {
        let mut numeric = true;
        for (row, line) in self.rows.iter().zip(&self.lines) {
            let cell = row[column].as_str();
            if cell.is_empty() {
                continue;
            }
            match cell.parse::<f64>() {
                Ok(v) if !v.is_finite() => {
                    return Err(self.error_at(
                        *line,
                        column,
                        format!("`{cell}` is not a finite number"),
                    ))
                }
                Ok(_) => {}
                Err(_) => numeric = false,
            }
        }
        Ok(if numeric {
            ColumnKind::Numeric
        } else {
            ColumnKind::Categorical
        })
    }

    /// An error pointing at a cell.
    pub fn error_at(&self, line: u64, column: usize, message: String) -> DataError {
        DataError::At {
            path: self.path.clone(),
            line,
            column: column + 1,
            message: format!("{message} (column `{}`)", self.headers[column]),
        }
    }
}

fn csv_error(path: &str, e: &csv::Error) -> DataError {
    let line = e.position().map_or(1, |p| p.line());
    let message = match e.kind() {
        csv::ErrorKind::UnequalLengths {
            expected_len, len, ..
        } => format!("row has {len} fields, the header has {expected_len}"),
        csv::ErrorKind::Utf8 { err, .. } => {
            return DataError::At {
                path: path.into(),
                line,
                column: err.field() + 1,
                message: "not valid UTF-8".into(),
            }
        }
        _ => e.to_string(),
    };
    DataError::At {
        path: path.into(),
        line,
        column: 1,
        message,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ragged_row_names_its_line() {
        let err = Table::parse("d.csv", b"a,b,label\n1,2,x\n1,2\n").unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.csv:3:1: row has 2 fields, the header has 3"
        );
    }

    #[test]
    fn kinds_and_missing_values() {
        let t = Table::parse("d.csv", b"a,b,label\n1,,x\n,red,y\n2.5,blue,x\n").unwrap();
        assert_eq!(t.column_kind(0).unwrap(), ColumnKind::Numeric);
        assert_eq!(t.column_kind(1).unwrap(), ColumnKind::Categorical);
        assert_eq!(t.lines, vec![2, 3, 4]);
    }

    #[test]
    fn non_finite_number_is_refused_with_its_position() {
        let t = Table::parse("d.csv", b"a,label\n1,x\ninf,y\n").unwrap();
        let err = t.column_kind(0).unwrap_err();
        assert_eq!(
            err.to_string(),
            "d.csv:3:1: `inf` is not a finite number (column `a`)"
        );
    }

    #[test]
    fn empty_and_header_only_files() {
        assert!(matches!(
            Table::parse("d", b""),
            Err(DataError::Empty { .. })
        ));
        assert!(matches!(
            Table::parse("d", b"a,label\n"),
            Err(DataError::NoRows { .. })
        ));
    }
}
