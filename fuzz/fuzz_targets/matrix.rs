//! The accuracy-matrix CSV of `clbench metrics`: any text is a matrix with its metrics, or an
//! error naming the line.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(m) = clbench::metrics::parse_matrix_csv(text, Path::new("fuzz.csv")) {
            let _ = m.summary();
            let _ = m.average_accuracy_curve();
        }
    }
});
