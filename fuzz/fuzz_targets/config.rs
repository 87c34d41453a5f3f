//! Experiment configs with `extends` and `sweep`: any text is a validated experiment or an
//! error naming the file and the key. The input is written as `child.yaml` next to a valid
//! `base.yaml` it may extend.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

/// A scratch directory holding `base.yaml` and the stream file it names.
fn scratch() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("clbench-fuzz-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("stream.yaml"),
            "dataset: mnist\nkind: split\nscenario: class-incremental\n",
        )
        .unwrap();
        std::fs::write(
            dir.join("base.yaml"),
            "name: base\nstream: stream.yaml\nmodel: {kind: mlp, hidden: [16]}\nmethods:\n  - name: sgd\n    optimizer: {name: sgd, lr: 0.1}\ntraining: {batch_size: 8, iterations: 2}\nseeds: [0]\n",
        )
        .unwrap();
        dir
    })
}

fuzz_target!(|data: &[u8]| {
    let dir = scratch();
    let child = dir.join("child.yaml");
    if std::fs::write(&child, data).is_err() {
        return;
    }
    if let Ok(exp) = clbench::experiment::Experiment::load(&child) {
        let _ = clbench::experiment::plan(&exp, None);
    }
});
