//! The datasets clbench knows: their files, checksums, mirrors and where to look for them.

use std::path::{Path, PathBuf};

/// One of the four files of an MNIST-format dataset.
#[derive(Debug, Clone, Copy)]
pub struct DataFile {
    /// Canonical file name without `.gz` (e.g. `train-images-idx3-ubyte`).
    pub name: &'static str,
    /// SHA-256 of the decompressed content, lowercase hex.
    pub sha256: &'static str,
}

/// A dataset in the MNIST format (28×28 grey images, labels 0..9).
#[derive(Debug, Clone, Copy)]
pub struct DatasetInfo {
    /// The name used in stream files and on the command line (`mnist`, `fashion-mnist`).
    pub name: &'static str,
    /// Human-readable title with its reference.
    pub title: &'static str,
    /// License of the data.
    pub license: &'static str,
    /// Training images, training labels, test images, test labels.
    pub files: [DataFile; 4],
    /// Base URLs of the canonical mirrors; each file is `<mirror><name>.gz`.
    pub mirrors: &'static [&'static str],
    /// Mean and standard deviation of the training pixels scaled to `[0, 1]`.
    pub pixel_mean_std: (f32, f32),
    /// Where a Debian package installs it, if one does.
    pub system_dir: Option<&'static str>,
    /// The apt package that provides it.
    pub debian_package: Option<&'static str>,
}

/// Every dataset clbench can load.
pub const DATASETS: [DatasetInfo; 2] = [
    DatasetInfo {
        name: "mnist",
        title: "MNIST (LeCun, Cortes, Burges 1998)",
        license: "CC BY-SA 3.0",
        files: [
            DataFile {
                name: "train-images-idx3-ubyte",
                sha256: "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db",
            },
            DataFile {
                name: "train-labels-idx1-ubyte",
                sha256: "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5",
            },
            DataFile {
                name: "t10k-images-idx3-ubyte",
                sha256: "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7",
            },
            DataFile {
                name: "t10k-labels-idx1-ubyte",
                sha256: "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2",
            },
        ],
        mirrors: &[
            "https://ossci-datasets.s3.amazonaws.com/mnist/",
            "https://storage.googleapis.com/cvdf-datasets/mnist/",
        ],
        pixel_mean_std: (0.1307, 0.3081),
        system_dir: None,
        debian_package: None,
    },
    DatasetInfo {
        name: "fashion-mnist",
        title: "Fashion-MNIST (Xiao, Rasul, Vollgraf 2017)",
        license: "MIT",
        files: [
            DataFile {
                name: "train-images-idx3-ubyte",
                sha256: "c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888",
            },
            DataFile {
                name: "train-labels-idx1-ubyte",
                sha256: "bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9",
            },
            DataFile {
                name: "t10k-images-idx3-ubyte",
                sha256: "5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b",
            },
            DataFile {
                name: "t10k-labels-idx1-ubyte",
                sha256: "0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34",
            },
        ],
        mirrors: &["http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"],
        pixel_mean_std: (0.2860, 0.3530),
        system_dir: Some("/usr/share/datasets/fashion-mnist"),
        debian_package: Some("dataset-fashion-mnist"),
    },
];

/// The environment variable naming a directory that holds one folder per dataset.
pub const DATA_DIR_ENV: &str = "CLBENCH_DATA_DIR";

/// Looks a dataset up by name.
pub fn dataset_info(name: &str) -> Option<&'static DatasetInfo> {
    DATASETS.iter().find(|d| d.name == name)
}

/// The names of all known datasets, for error messages.
pub fn dataset_names() -> Vec<&'static str> {
    DATASETS.iter().map(|d| d.name).collect()
}

/// The directory where `clbench data fetch` writes: `$CLBENCH_DATA_DIR/<name>` when the variable
/// is set, else `data/<name>` under the current directory.
pub fn default_fetch_dir(info: &DatasetInfo) -> PathBuf {
    match std::env::var_os(DATA_DIR_ENV) {
        Some(dir) if !dir.is_empty() => PathBuf::from(dir).join(info.name),
        _ => PathBuf::from("data").join(info.name),
    }
}

/// The directories searched for a dataset, in order: `$CLBENCH_DATA_DIR/<name>`, `data/<name>`
/// under the current directory, `data/<name>` of the clbench source tree this binary was built
/// from, and the Debian package's directory.
pub fn search_dirs(info: &DatasetInfo) -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os(DATA_DIR_ENV) {
        if !dir.is_empty() {
            dirs.push(PathBuf::from(dir).join(info.name));
        }
    }
    dirs.push(PathBuf::from("data").join(info.name));
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("data")
        .join(info.name);
    if !dirs.iter().any(|d| same_dir(d, &built_from)) {
        dirs.push(built_from);
    }
    if let Some(sys) = info.system_dir {
        dirs.push(PathBuf::from(sys));
    }
    dirs
}

fn same_dir(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(x), Ok(y)) => x == y,
        _ => a == b,
    }
}

/// The path of `file` inside `dir`: the `.gz` file if present, else the raw file.
pub fn file_in(dir: &Path, file: &DataFile) -> Option<PathBuf> {
    let gz = dir.join(format!("{}.gz", file.name));
    if gz.is_file() {
        return Some(gz);
    }
    let raw = dir.join(file.name);
    raw.is_file().then_some(raw)
}

/// The first search directory that holds all four files of the dataset.
pub fn locate(info: &DatasetInfo) -> Option<PathBuf> {
    search_dirs(info)
        .into_iter()
        .find(|dir| info.files.iter().all(|f| file_in(dir, f).is_some()))
}
