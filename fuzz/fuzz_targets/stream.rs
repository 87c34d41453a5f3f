//! Stream files: any text is a validated stream spec or an error naming the key.
#![no_main]

use std::path::Path;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(spec) = clbench::streams::StreamSpec::from_yaml(text, Path::new("fuzz.yaml")) {
            // A validated spec describes its tasks without building anything large.
            let _ = spec.num_tasks();
            let _ = spec.angle_list();
        }
    }
});
