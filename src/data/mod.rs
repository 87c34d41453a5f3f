//! Real image data: the MNIST family, read from IDX files and checked against known SHA-256 sums.
//!
//! Images stay as `u8` in memory (MNIST's training set is 47 MB); task streams convert the pixels
//! of one batch at a time to `f32`.

pub mod catalog;
pub mod fetch;
pub mod idx;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};

use sha2::{Digest, Sha256};

pub use catalog::{dataset_info, dataset_names, DatasetInfo, DATASETS};

/// Side length of the square images of the MNIST family.
pub const IMAGE_SIDE: usize = 28;
/// Pixels per image.
pub const IMAGE_PIXELS: usize = IMAGE_SIDE * IMAGE_SIDE;

/// What can go wrong while finding, reading or downloading data.
#[derive(Debug, thiserror::Error)]
pub enum DataError {
    /// No dataset of that name exists.
    #[error("unknown dataset `{name}` (known: {known})")]
    UnknownDataset { name: String, known: String },
    /// The dataset is in none of the searched directories.
    #[error("dataset `{name}` not found; looked in: {searched}. {hint}")]
    NotFound {
        name: String,
        searched: String,
        hint: String,
    },
    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file's content is not a valid IDX file of the expected shape.
    #[error("{}: {reason}", path.display())]
    Corrupt { path: PathBuf, reason: String },
    /// A file's decompressed content does not have the published SHA-256 sum.
    #[error("{}: SHA-256 of the decompressed content is {actual}, expected {expected}; the file is damaged or is not the one it claims to be", path.display())]
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// A download failed on every mirror.
    #[error("could not download {file}: {reason}")]
    Download { file: String, reason: String },
}

impl crate::error::InputError for DataError {
    /// Whether the error is the user's input (missing or bad data) rather than a runtime failure.
    fn is_input_error(&self) -> bool {
        !matches!(self, DataError::Io { .. } | DataError::Download { .. })
    }
}

/// One split (train or test) of an image dataset.
#[derive(Debug, Clone)]
pub struct Split {
    /// Pixels, `len() * IMAGE_PIXELS` bytes, image after image, row-major.
    pub images: Vec<u8>,
    /// One label per image.
    pub labels: Vec<u8>,
}

impl Split {
    /// Number of images.
    pub fn len(&self) -> usize {
        self.labels.len()
    }

    /// Whether the split has no images.
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }

    /// The pixels of image `i`.
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS]
    }
}

/// A loaded, verified dataset.
#[derive(Debug)]
pub struct Dataset {
    /// Its catalog name.
    pub name: String,
    /// The directory it was loaded from.
    pub dir: PathBuf,
    /// The training split.
    pub train: Split,
    /// The test split.
    pub test: Split,
}

impl Dataset {
    /// The dataset for choosing hyperparameters: of every class, a fraction `fraction` of the
    /// training images (rounded, at least one and at most all but one of a class with two or more) becomes the test split and
    /// the rest the training split; the real test split is dropped. Which images are held out
    /// is fixed (a shuffle under the constant seed 0, independent of any run's seed), so every
    /// seed and method of a search is scored on the same held-out images. Images keep their
    /// order within each part.
    pub fn validation_split(&self, fraction: f64) -> Dataset {
        let mut rng = crate::rng::SeedRng::derive(0, "validation-split", 0);
        let mut order: Vec<usize> = (0..self.train.len()).collect();
        rng.shuffle(&mut order);
        let mut per_class = [0usize; 256];
        for &l in &self.train.labels {
            per_class[l as usize] += 1;
        }
        let quota = per_class.map(|n| match n {
            0 | 1 => 0,
            _ => ((n as f64 * fraction).round() as usize).clamp(1, n - 1),
        });
        let mut held = [0usize; 256];
        let mut is_held = vec![false; self.train.len()];
        for i in order {
            let l = self.train.labels[i] as usize;
            if held[l] < quota[l] {
                held[l] += 1;
                is_held[i] = true;
            }
        }
        let part = |keep: bool| {
            let mut split = Split {
                images: Vec::new(),
                labels: Vec::new(),
            };
            for (i, &h) in is_held.iter().enumerate() {
                if h == keep {
                    split.images.extend_from_slice(
                        &self.train.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS],
                    );
                    split.labels.push(self.train.labels[i]);
                }
            }
            split
        };
        Dataset {
            name: self.name.clone(),
            dir: self.dir.clone(),
            train: part(false),
            test: part(true),
        }
    }

    /// The sorted distinct labels of the training split.
    pub fn classes(&self) -> Vec<u8> {
        let mut seen = [false; 256];
        for &l in &self.train.labels {
            seen[l as usize] = true;
        }
        (0..=255u8).filter(|&l| seen[l as usize]).collect()
    }
}

/// The outcome of checking one file against its published checksum.
#[derive(Debug, Clone)]
pub struct FileCheck {
    /// The file checked.
    pub path: PathBuf,
    /// `Ok(())` when the checksum matched.
    pub result: Result<(), String>,
}

/// Reads a file, decompresses it if needed and checks its SHA-256 sum. Returns the content.
pub fn read_verified(path: &Path, expected_sha256: &str) -> Result<Vec<u8>, DataError> {
    let io = |source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    // A file larger than any of the family's is refused before it is read (a sparse file of
    // gigabytes would otherwise be read whole).
    if std::fs::metadata(path).map_err(io)?.len() > idx::MAX_FILE_BYTES {
        return Err(DataError::Corrupt {
            path: path.to_path_buf(),
            reason: format!(
                "larger than {} MiB: not a file of an MNIST-family dataset",
                idx::MAX_FILE_BYTES >> 20
            ),
        });
    }
    let bytes = std::fs::read(path).map_err(io)?;
    let content = idx::decompress(bytes, path)?;
    let actual = sha256_hex(&content);
    if actual != expected_sha256 {
        return Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: expected_sha256.to_string(),
            actual,
        });
    }
    Ok(content)
}

/// Lowercase hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Checks every file of a dataset in `dir` against its published checksum.
pub fn verify_dir(info: &DatasetInfo, dir: &Path) -> Vec<FileCheck> {
    info.files
        .iter()
        .map(|f| match catalog::file_in(dir, f) {
            None => FileCheck {
                path: dir.join(format!("{}.gz", f.name)),
                result: Err("missing".into()),
            },
            Some(path) => FileCheck {
                result: read_verified(&path, f.sha256)
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
                path,
            },
        })
        .collect()
}

/// Finds a dataset's directory or explains where it looked and how to get it.
pub fn find(name: &str) -> Result<(&'static DatasetInfo, PathBuf), DataError> {
    let info = dataset_info(name).ok_or_else(|| DataError::UnknownDataset {
        name: name.to_string(),
        known: dataset_names().join(", "),
    })?;
    match catalog::locate(info) {
        Some(dir) => Ok((info, dir)),
        None => {
            let searched = catalog::search_dirs(info)
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let mut hint = format!("Run `clbench data fetch {name}`");
            if let Some(pkg) = info.debian_package {
                hint.push_str(&format!(" or `apt-get install {pkg}`"));
            }
            hint.push_str(&format!(
                ", or set {} to a directory holding `{name}/`.",
                catalog::DATA_DIR_ENV
            ));
            Err(DataError::NotFound {
                name: name.to_string(),
                searched,
                hint,
            })
        }
    }
}

/// Loads a dataset from `dir`, verifying every file's checksum before parsing it.
pub fn load_from(info: &DatasetInfo, dir: &Path) -> Result<Dataset, DataError> {
    let read = |i: usize| -> Result<(PathBuf, idx::IdxArray), DataError> {
        let f = &info.files[i];
        let path = catalog::file_in(dir, f).ok_or_else(|| DataError::Io {
            path: dir.join(format!("{}.gz", f.name)),
            source: std::io::Error::new(std::io::ErrorKind::NotFound, "file missing"),
        })?;
        let content = read_verified(&path, f.sha256)?;
        let array = idx::parse(&content, &path)?;
        Ok((path, array))
    };
    let split = |images: usize, labels: usize| -> Result<Split, DataError> {
        let (ipath, img) = read(images)?;
        let (lpath, lab) = read(labels)?;
        if img.dims.len() != 3 || img.dims[1] != IMAGE_SIDE || img.dims[2] != IMAGE_SIDE {
            return Err(DataError::Corrupt {
                path: ipath,
                reason: format!("expected images of shape [n, 28, 28], found {:?}", img.dims),
            });
        }
        if lab.dims.len() != 1 {
            return Err(DataError::Corrupt {
                path: lpath,
                reason: format!("expected a 1-dimensional label array, found {:?}", lab.dims),
            });
        }
        if lab.dims[0] != img.dims[0] {
            return Err(DataError::Corrupt {
                path: lpath,
                reason: format!(
                    "{} labels for {} images in {}",
                    lab.dims[0],
                    img.dims[0],
                    ipath.display()
                ),
            });
        }
        Ok(Split {
            images: img.data,
            labels: lab.data,
        })
    };
    Ok(Dataset {
        name: info.name.to_string(),
        dir: dir.to_path_buf(),
        train: split(0, 1)?,
        test: split(2, 3)?,
    })
}

/// Loads a dataset by name (found with [`find`]), once per process: later calls share it.
pub fn load(name: &str) -> Result<Arc<Dataset>, DataError> {
    static CACHE: OnceLock<Mutex<HashMap<String, Arc<Dataset>>>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| Mutex::new(HashMap::new()));
    let mut guard = cache.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(d) = guard.get(name) {
        return Ok(d.clone());
    }
    let (info, dir) = find(name)?;
    tracing::debug!(dataset = name, dir = %dir.display(), "loading dataset");
    let dataset = Arc::new(load_from(info, &dir)?);
    guard.insert(name.to_string(), dataset.clone());
    Ok(dataset)
}
