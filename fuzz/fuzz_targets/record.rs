//! A run's `record.json`: any text is a record (whose metrics are then computed) or an error.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(record) = serde_json::from_slice::<clbench::train::RunRecord>(data) {
        if let Some(m) = clbench::experiment::matrix_of(&record) {
            let _ = m.summary();
        }
        let _ = clbench::experiment::throughput(&record);
    }
});
