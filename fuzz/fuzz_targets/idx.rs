//! The IDX reader, raw and gzip: any bytes give a dataset array or an error, never a crash,
//! a hang or an allocation beyond the family's largest file.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let path = Path::new("fuzz.idx");
    if let Ok(content) = clbench::data::idx::decompress(data.to_vec(), path) {
        let _ = clbench::data::idx::parse(&content, path);
    }
});
