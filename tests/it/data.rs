//! Real MNIST data: loading, verification, damaged files, and `data fetch` against a local server.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::time::Duration;

use clbench::data::{self, catalog, fetch, DataError};
use clbench::error::InputError;

fn mnist_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("data/mnist")
}

#[test]
fn shipped_mnist_loads_and_verifies() {
    let info = data::dataset_info("mnist").unwrap();
    let checks = data::verify_dir(info, &mnist_dir());
    assert_eq!(checks.len(), 4);
    assert!(checks.iter().all(|c| c.result.is_ok()), "{checks:?}");
    let d = data::load_from(info, &mnist_dir()).unwrap();
    assert_eq!(d.train.len(), 60000);
    assert_eq!(d.test.len(), 10000);
    assert_eq!(d.train.images.len(), 60000 * 784);
    assert_eq!(d.classes(), (0..10).collect::<Vec<u8>>());
    // Known class counts of the MNIST test set.
    let count = |c: u8| d.test.labels.iter().filter(|&&l| l == c).count();
    assert_eq!((count(0), count(1), count(9)), (980, 1135, 1009));
    // The first training label of MNIST is a 5.
    assert_eq!(d.train.labels[0], 5);
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

fn copy_mnist(to: &Path) {
    for f in std::fs::read_dir(mnist_dir()).unwrap() {
        let f = f.unwrap().path();
        std::fs::copy(&f, to.join(f.file_name().unwrap())).unwrap();
    }
}

#[test]
fn a_damaged_copy_is_reported_before_use_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    copy_mnist(dir.path());
    let info = data::dataset_info("mnist").unwrap();
    // One flipped pixel in the test images.
    let target = dir.path().join("t10k-images-idx3-ubyte.gz");
    let mut content = gunzip(&target);
    content[5000] ^= 0xff;
    std::fs::write(&target, gzip(&content)).unwrap();
    let err = data::load_from(info, dir.path()).unwrap_err();
    assert!(matches!(err, DataError::Checksum { .. }));
    let msg = err.to_string();
    assert!(
        msg.contains("t10k-images-idx3-ubyte.gz") && msg.contains("SHA-256"),
        "{msg}"
    );
    // A truncated gzip stream is a clear error too.
    let labels = dir.path().join("train-labels-idx1-ubyte.gz");
    let bytes = std::fs::read(&labels).unwrap();
    std::fs::write(&labels, &bytes[..bytes.len() / 2]).unwrap();
    let checks = data::verify_dir(info, dir.path());
    let bad: Vec<_> = checks.iter().filter(|c| c.result.is_err()).collect();
    assert_eq!(bad.len(), 2);
    assert!(bad
        .iter()
        .any(|c| c.result.as_ref().unwrap_err().contains("gzip")));
}

#[test]
fn raw_uncompressed_files_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    for f in &data::dataset_info("mnist").unwrap().files {
        let content = gunzip(&mnist_dir().join(format!("{}.gz", f.name)));
        std::fs::write(dir.path().join(f.name), content).unwrap();
    }
    let d = data::load_from(data::dataset_info("mnist").unwrap(), dir.path()).unwrap();
    assert_eq!(d.test.len(), 10000);
}

/// Serves files from `root` over HTTP/1.1 on 127.0.0.1 for at most `max_requests` requests.
fn serve(root: PathBuf, max_requests: usize) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming().take(max_requests) {
            let Ok(mut stream) = stream else { continue };
            stream.set_read_timeout(Some(Duration::from_secs(5))).ok();
            let mut reader = BufReader::new(stream.try_clone().unwrap());
            let mut request = String::new();
            if reader.read_line(&mut request).is_err() {
                continue;
            }
            loop {
                let mut line = String::new();
                if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
                    break;
                }
            }
            let path = request
                .split_whitespace()
                .nth(1)
                .unwrap_or("/")
                .trim_start_matches('/')
                .to_string();
            match std::fs::read(root.join(&path)) {
                Ok(body) => {
                    let head = format!(
                        "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nContent-Type: application/octet-stream\r\nConnection: close\r\n\r\n",
                        body.len()
                    );
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(&body);
                }
                Err(_) => {
                    let _ = stream.write_all(
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                    );
                }
            }
        }
    });
    format!("http://{addr}/")
}

fn options(dest: &Path, mirrors: Vec<String>) -> fetch::FetchOptions {
    fetch::FetchOptions {
        dest: dest.to_path_buf(),
        mirrors,
        progress: false,
        connect_timeout: Duration::from_secs(5),
        read_timeout: Duration::from_secs(5),
        total_timeout: Duration::from_secs(60),
    }
}

/// A mirror that accepts connections and never answers: the fetch gives up after the read
/// timeout with an error naming the mirror, instead of hanging.
#[test]
fn fetch_gives_up_on_a_mirror_that_never_answers() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let keep = held.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            keep.lock().unwrap().push(stream); // accepted, never read, never answered
        }
    });
    let dest = tempfile::tempdir().unwrap();
    let mut opts = options(dest.path(), vec![format!("http://{addr}/")]);
    opts.read_timeout = Duration::from_millis(500);
    let info = data::dataset_info("mnist").unwrap();
    let started = std::time::Instant::now();
    let err = fetch::fetch(info, &opts).unwrap_err().to_string();
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    assert!(err.contains(&addr.to_string()), "{err}");
    assert!(
        err.to_lowercase().contains("timeout") || err.contains("timed out"),
        "{err}"
    );
}

#[test]
fn fetch_downloads_verifies_and_installs_from_a_local_mirror() {
    let mirror = serve(mnist_dir(), 16);
    let dest = tempfile::tempdir().unwrap();
    let info = data::dataset_info("mnist").unwrap();
    let outcomes = fetch::fetch(info, &options(dest.path(), vec![mirror.clone()])).unwrap();
    assert_eq!(outcomes.len(), 4);
    assert!(outcomes
        .iter()
        .all(|o| matches!(o, fetch::FetchOutcome::Downloaded { .. })));
    assert!(data::verify_dir(info, dest.path())
        .iter()
        .all(|c| c.result.is_ok()));
    // No temporary files are left behind.
    let names: Vec<String> = std::fs::read_dir(dest.path())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.starts_with('.')), "{names:?}");
    // A second fetch finds everything in place.
    let again = fetch::fetch(info, &options(dest.path(), vec![mirror])).unwrap();
    assert!(again
        .iter()
        .all(|o| matches!(o, fetch::FetchOutcome::AlreadyPresent(_))));
}

#[test]
fn fetch_rejects_a_corrupt_mirror_and_falls_back_to_the_next() {
    // The first mirror serves Fashion-MNIST-shaped junk under MNIST's names.
    let junk = tempfile::tempdir().unwrap();
    for f in &data::dataset_info("mnist").unwrap().files {
        std::fs::write(
            junk.path().join(format!("{}.gz", f.name)),
            gzip(b"not mnist"),
        )
        .unwrap();
    }
    let bad = serve(junk.path().to_path_buf(), 16);
    let info = data::dataset_info("mnist").unwrap();
    let dest = tempfile::tempdir().unwrap();
    let err = fetch::fetch(info, &options(dest.path(), vec![bad.clone()]))
        .unwrap_err()
        .to_string();
    assert!(err.contains("SHA-256"), "{err}");
    assert!(
        std::fs::read_dir(dest.path()).unwrap().next().is_none(),
        "nothing may be installed"
    );
    let good = serve(mnist_dir(), 16);
    let ok = fetch::fetch(info, &options(dest.path(), vec![bad, good])).unwrap();
    assert_eq!(ok.len(), 4);
}

#[test]
fn fetch_offline_says_so_clearly() {
    // Nothing listens on this port: the connection is refused at once.
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let dest = tempfile::tempdir().unwrap();
    let info = data::dataset_info("mnist").unwrap();
    let err = fetch::fetch(
        info,
        &options(dest.path(), vec![format!("http://127.0.0.1:{port}/")]),
    )
    .unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.contains("every mirror failed") && msg.contains("offline"),
        "{msg}"
    );
    assert!(!err.is_input_error());
}

#[test]
fn search_order_ends_with_the_debian_directory() {
    let info = catalog::dataset_info("fashion-mnist").unwrap();
    let dirs = catalog::search_dirs(info);
    assert!(dirs.iter().any(|d| d == Path::new("data/fashion-mnist")));
    assert_eq!(
        dirs.last().unwrap(),
        Path::new("/usr/share/datasets/fashion-mnist")
    );
}
