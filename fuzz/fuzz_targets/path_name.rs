//! Names that become parts of paths (experiment, stream, method names): whatever a stream file
//! names its stream, a name that `validate::path_name` accepts keeps every file named after it
//! inside the folder it is written into, and a stream file whose name it refuses is an error.
#![no_main]

use std::path::{Component, Path};

use libfuzzer_sys::fuzz_target;

/// `dir/<name>-metrics.png` (how figures are named) has no component outside `dir`.
fn stays_inside(name: &str) -> bool {
    let dir = Path::new("/out/figures");
    let file = dir.join(format!("{name}-metrics.png"));
    file.parent() == Some(dir)
        && file
            .strip_prefix(dir)
            .map(|rest| rest.components().all(|c| matches!(c, Component::Normal(_))))
            .unwrap_or(false)
}

fuzz_target!(|data: &[u8]| {
    let Ok(name) = std::str::from_utf8(data) else {
        return;
    };
    if clbench::validate::path_name("name", "a stream name", name, &[]).is_ok() {
        assert!(stays_inside(name), "{name:?} accepted but leaves its folder");
    }
    // The same name in a stream file: accepted only if the rule accepts it.
    let yaml = format!(
        "name: {}\ndataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 2\n",
        serde_json::to_string(name).unwrap_or_default()
    );
    if let Ok(spec) = clbench::streams::StreamSpec::from_yaml(&yaml, Path::new("fuzz.yaml")) {
        let stream = spec.name.unwrap_or_default();
        assert!(stays_inside(&stream), "stream name {stream:?} leaves its folder");
    }
});
