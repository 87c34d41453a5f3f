//! Writing frames to disk: CSV, Parquet and JSON, each atomically.

use std::path::Path;

use polars::prelude::*;

use crate::experiment::store::write_atomic;

/// What can go wrong while exporting.
#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    /// polars failed to encode a frame.
    #[error("{}: {source}", path.display())]
    Encode {
        path: std::path::PathBuf,
        #[source]
        source: PolarsError,
    },
    /// Writing failed.
    #[error(transparent)]
    Store(#[from] crate::experiment::store::StoreError),
    /// A plot could not be drawn.
    #[error("{}: {message}", path.display())]
    Plot {
        path: std::path::PathBuf,
        message: String,
    },
}

/// File formats of a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FrameFormat {
    /// Comma-separated values with a header.
    Csv,
    /// Apache Parquet.
    Parquet,
    /// A JSON array of row objects.
    Json,
}

impl FrameFormat {
    /// All formats.
    pub const ALL: [FrameFormat; 3] = [FrameFormat::Csv, FrameFormat::Parquet, FrameFormat::Json];

    /// File extension.
    pub fn extension(self) -> &'static str {
        match self {
            FrameFormat::Csv => "csv",
            FrameFormat::Parquet => "parquet",
            FrameFormat::Json => "json",
        }
    }
}

/// Encodes a frame in `format`.
pub fn encode(df: &DataFrame, format: FrameFormat) -> PolarsResult<Vec<u8>> {
    let mut buf = Vec::new();
    let mut df = df.clone();
    match format {
        FrameFormat::Csv => {
            CsvWriter::new(&mut buf)
                .include_header(true)
                .finish(&mut df)?;
        }
        FrameFormat::Parquet => {
            ParquetWriter::new(&mut buf).finish(&mut df)?;
        }
        FrameFormat::Json => {
            JsonWriter::new(&mut buf)
                .with_json_format(JsonFormat::Json)
                .finish(&mut df)?;
        }
    }
    Ok(buf)
}

/// Writes a frame to `path` in `format`, atomically.
pub fn write_frame(df: &DataFrame, path: &Path, format: FrameFormat) -> Result<(), ExportError> {
    let bytes = encode(df, format).map_err(|source| ExportError::Encode {
        path: path.to_path_buf(),
        source,
    })?;
    write_atomic(path, &bytes)?;
    Ok(())
}

/// Writes `<dir>/<name>.csv`, `.parquet` and `.json`.
pub fn write_all_formats(df: &DataFrame, dir: &Path, name: &str) -> Result<(), ExportError> {
    for f in FrameFormat::ALL {
        write_frame(df, &dir.join(format!("{name}.{}", f.extension())), f)?;
    }
    Ok(())
}
