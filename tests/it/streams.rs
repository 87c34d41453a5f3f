//! Task streams: every shipped file loads, and each kind and scenario yields the right tasks.

use std::path::Path;

use crate::common::{stream, tasks_dir};

use clbench::data::IMAGE_PIXELS;
use clbench::streams::{
    Batch, BatchOrder, OutputLayout, StreamError, StreamSpec, TaskStream, Transform,
};

fn fashion_available() -> bool {
    clbench::data::find("fashion-mnist").is_ok()
}

#[test]
fn every_shipped_stream_file_loads_and_builds() {
    let mut names: Vec<_> = std::fs::read_dir(tasks_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    names.sort();
    assert!(names.len() >= 7, "{names:?}");
    for path in names {
        let file = StreamSpec::load(&path).unwrap_or_else(|e| panic!("{e}"));
        if file.spec.dataset == "fashion-mnist" && !fashion_available() {
            // CI installs Debian's dataset-fashion-mnist; elsewhere it is optional.
            assert!(
                std::env::var_os("CI").is_none(),
                "CI must provide Fashion-MNIST"
            );
            eprintln!("skipping {} (Fashion-MNIST not installed)", path.display());
            continue;
        }
        let stream = TaskStream::build(&file, 0).unwrap_or_else(|e| panic!("{e}"));
        assert!(!stream.is_empty());
        for task in &stream.tasks {
            assert!(
                !task.train.is_empty() && !task.test.is_empty(),
                "{}",
                path.display()
            );
        }
    }
}

#[test]
fn permuted_stream_applies_distinct_reproducible_permutations() {
    let a = stream("permuted-mnist-5.yaml", 3);
    let b = stream("permuted-mnist-5.yaml", 3);
    let c = stream("permuted-mnist-5.yaml", 4);
    assert_eq!(a.len(), 5);
    assert_eq!(a.outputs, OutputLayout::Shared { outputs: 10 });
    let perm = |s: &TaskStream, t: usize| match &s.tasks[t].transform {
        Transform::Permute { source, .. } => source.as_ref().clone(),
        other => panic!("{other:?}"),
    };
    for t in 0..5 {
        assert_eq!(perm(&a, t), perm(&b, t), "same seed, same permutation");
        assert_ne!(
            perm(&a, t),
            perm(&c, t),
            "another seed, another permutation"
        );
        for u in 0..t {
            assert_ne!(perm(&a, t), perm(&a, u));
        }
        assert_eq!(a.tasks[t].train.len(), 60000);
        assert_eq!(a.tasks[t].test.len(), 10000);
    }
    // A batch is the permuted image: pixel i of the output is pixel source[i] of the original.
    let mut batch = Batch::default();
    a.test_batch(1, &[7], &mut batch);
    let (scale, shift) = a.pixel_scale_shift;
    let original = a.dataset.test.image(7);
    let p = perm(&a, 1);
    for i in 0..IMAGE_PIXELS {
        assert_eq!(
            batch.pixels[i],
            original[p[i] as usize] as f32 * scale + shift
        );
    }
    assert_eq!(batch.targets, vec![a.dataset.test.labels[7] as u32]);
}

#[test]
fn first_identity_option_leaves_task_one_unpermuted() {
    let text = "dataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 2\nfirst_identity: true\n";
    let spec = StreamSpec::from_yaml(text, Path::new("inline.yaml")).unwrap();
    let file = clbench::streams::StreamFile {
        path: "inline.yaml".into(),
        spec,
    };
    let s = TaskStream::build(&file, 0).unwrap();
    assert!(matches!(s.tasks[0].transform, Transform::Identity));
    assert!(matches!(s.tasks[1].transform, Transform::Permute { .. }));
}

#[test]
fn split_scenarios_map_labels_as_specified() {
    let til = stream("split-mnist-task-il.yaml", 0);
    let dil = stream("split-mnist-domain-il.yaml", 0);
    let cil = stream("split-mnist-class-il.yaml", 0);
    assert_eq!(til.outputs, OutputLayout::MultiHead { sizes: vec![2; 5] });
    assert_eq!(dil.outputs, OutputLayout::Shared { outputs: 2 });
    assert_eq!(cil.outputs, OutputLayout::Shared { outputs: 10 });
    for t in 0..5 {
        let classes = vec![2 * t as u8, 2 * t as u8 + 1];
        for s in [&til, &dil, &cil] {
            assert_eq!(s.tasks[t].classes, classes);
            // Only examples of the task's classes.
            assert!(s.tasks[t]
                .train
                .iter()
                .all(|&i| classes.contains(&s.dataset.train.labels[i as usize])));
            assert!(s.tasks[t]
                .test
                .iter()
                .all(|&i| classes.contains(&s.dataset.test.labels[i as usize])));
        }
        assert_eq!(til.tasks[t].head, t);
        assert_eq!(til.tasks[t].target_of[2 * t + 1], Some(1));
        assert_eq!(dil.tasks[t].target_of[2 * t], Some(0));
        assert_eq!(dil.tasks[t].target_of[2 * t + 1], Some(1));
        assert_eq!(cil.tasks[t].target_of[2 * t + 1], Some(2 * t as u32 + 1));
    }
    // Every MNIST test image lands in exactly one task.
    let total: usize = cil.tasks.iter().map(|t| t.test.len()).sum();
    assert_eq!(total, 10000);
}

#[test]
fn masked_task_incremental_uses_one_layer_with_per_task_ranges() {
    let text = "dataset: mnist\nkind: split\nscenario: task-incremental\ntask_output: masked\ngroups: [[3, 5], [0, 9, 1]]\n";
    let spec = StreamSpec::from_yaml(text, Path::new("inline.yaml")).unwrap();
    let s = TaskStream::build(
        &clbench::streams::StreamFile {
            path: "inline.yaml".into(),
            spec,
        },
        0,
    )
    .unwrap();
    assert_eq!(s.outputs, OutputLayout::Shared { outputs: 5 });
    assert_eq!(s.tasks[0].output_range, Some(0..2));
    assert_eq!(s.tasks[1].output_range, Some(2..5));
    assert_eq!(s.tasks[1].target_of[9], Some(3));
}

fn inline(text: &str) -> TaskStream {
    let spec = StreamSpec::from_yaml(text, Path::new("inline.yaml")).unwrap();
    TaskStream::build(
        &clbench::streams::StreamFile {
            path: "inline.yaml".into(),
            spec,
        },
        0,
    )
    .unwrap()
}

#[test]
fn class_incremental_seen_so_far_scores_every_task_over_the_classes_met_by_then() {
    let s = inline("dataset: mnist\nkind: split\nscenario: class-incremental\nclass_output: seen-so-far\ngroups: [[0, 1], [2, 3, 4], [5, 6], [7, 8, 9]]\n");
    assert_eq!(s.outputs, OutputLayout::Shared { outputs: 10 });
    // The stream itself has no restriction; each stage's view has one.
    assert!(s.tasks.iter().all(|t| t.output_range.is_none()));
    let ranges = |stage: usize| -> Vec<_> {
        s.at_stage(stage)
            .tasks
            .iter()
            .map(|t| t.output_range.clone().unwrap())
            .collect()
    };
    // Before and while learning task 1: task 1 over its 2 classes, later tasks over the classes
    // up to their own.
    assert_eq!(ranges(0), vec![0..2, 0..5, 0..7, 0..10]);
    // While learning task 3: tasks 1-3 over the 7 classes seen; task 4 over all 10.
    assert_eq!(ranges(2), vec![0..7, 0..7, 0..7, 0..10]);
    assert_eq!(ranges(3), vec![0..10; 4]);
    // Past the last task the view stays at all classes.
    assert_eq!(ranges(9), vec![0..10; 4]);
    assert!(s.describe()[0].contains("softmax over the classes seen so far"));

    // The default (`all`) and other scenarios are left as they are at every stage.
    for text in [
        "dataset: mnist\nkind: split\nscenario: class-incremental\n",
        "dataset: mnist\nkind: split\nscenario: class-incremental\nclass_output: all\n",
        "dataset: mnist\nkind: split\nscenario: domain-incremental\n",
    ] {
        let s = inline(text);
        let view = s.at_stage(2);
        assert!(matches!(view, std::borrow::Cow::Borrowed(_)), "{text}");
        assert!(view.tasks.iter().all(|t| t.output_range.is_none()));
    }
    let masked =
        inline("dataset: mnist\nkind: split\nscenario: task-incremental\ntask_output: masked\n");
    assert_eq!(masked.at_stage(3).tasks[1].output_range, Some(2..4));
}

#[test]
fn class_order_shuffle_is_seeded() {
    let text = "dataset: mnist\nkind: split\nscenario: class-incremental\nshuffle_classes: true\n";
    let spec = StreamSpec::from_yaml(text, Path::new("inline.yaml")).unwrap();
    let file = clbench::streams::StreamFile {
        path: "inline.yaml".into(),
        spec,
    };
    let order = |seed| -> Vec<u8> {
        TaskStream::build(&file, seed)
            .unwrap()
            .tasks
            .iter()
            .flat_map(|t| t.classes.clone())
            .collect()
    };
    assert_eq!(order(1), order(1));
    assert_ne!(order(1), order(2));
    let mut sorted = order(1);
    sorted.sort();
    assert_eq!(sorted, (0..10).collect::<Vec<u8>>());
}

#[test]
fn rotated_stream_spaces_angles_evenly() {
    let s = stream("rotated-mnist.yaml", 0);
    let angles: Vec<f64> = s
        .tasks
        .iter()
        .map(|t| match t.transform {
            Transform::Rotate { degrees, .. } => degrees,
            _ => panic!(),
        })
        .collect();
    assert_eq!(angles, vec![0.0, 45.0, 90.0, 135.0, 180.0]);
    let mut batch = Batch::default();
    s.test_batch(4, &[0], &mut batch);
    let original = s.dataset.test.image(0);
    // 180°: the image reversed.
    for i in 0..IMAGE_PIXELS {
        assert!((batch.pixels[i] - original[IMAGE_PIXELS - 1 - i] as f32 / 255.0).abs() < 1e-6);
    }
}

#[test]
fn batch_order_is_seeded_and_covers_every_example_per_epoch() {
    let examples: Vec<u32> = (0..10).collect();
    let mut a = BatchOrder::new(5, 0, &examples, 4, false);
    let mut b = BatchOrder::new(5, 0, &examples, 4, false);
    assert_eq!(a.batches_per_epoch(), 3);
    let mut epoch = Vec::new();
    for _ in 0..3 {
        let x = a.next_batch().to_vec();
        assert_eq!(x, b.next_batch().to_vec());
        epoch.extend(x);
    }
    epoch.sort();
    assert_eq!(epoch, examples);
    let mut it = BatchOrder::new(5, 0, &examples, 4, true);
    assert_eq!(it.batches_per_epoch(), 2);
    for _ in 0..7 {
        assert_eq!(it.next_batch().len(), 4);
    }
    let other_task = BatchOrder::new(5, 1, &examples, 10, false)
        .next_batch()
        .to_vec();
    let this_task = BatchOrder::new(5, 0, &examples, 10, false)
        .next_batch()
        .to_vec();
    assert_ne!(other_task, this_task);
}

fn error_of(text: &str) -> String {
    match StreamSpec::from_yaml(text, Path::new("tasks/bad.yaml")) {
        Ok(spec) => {
            let file = clbench::streams::StreamFile {
                path: "tasks/bad.yaml".into(),
                spec,
            };
            TaskStream::build(&file, 0)
                .map(|_| ())
                .unwrap_err()
                .to_string()
        }
        Err(e) => e.to_string(),
    }
}

#[test]
fn bad_streams_are_clear_errors_naming_file_and_key() {
    let base = "dataset: mnist\nscenario: class-incremental\n";
    let cases = [
        (
            format!("{base}kind: permuted\ntaks: 3\n"),
            "did you mean `tasks`",
        ),
        (
            format!("{base}kind: permuted\ntasks: 0\n"),
            "key `tasks`: expected at least 1 task",
        ),
        (
            format!("{base}kind: split\ngroups: [[0, 1], []]\n"),
            "key `groups`: group 2 is empty",
        ),
        (
            format!("{base}kind: split\ngroups: [[0, 1], [1, 2]]\n"),
            "class 1 appears in more than one group",
        ),
        (
            format!("{base}kind: split\ngroups: [[0, 12]]\n"),
            "class 12 does not occur in dataset `mnist`",
        ),
        (
            format!("{base}kind: split\ngroups: []\n"),
            "expected at least one group",
        ),
        (format!("{base}kind: rotated\n"), "key `angles`"),
        (
            format!("{base}kind: permuted\ntasks: 2\nangles: [1]\n"),
            "key `angles`: does not apply to a permuted stream",
        ),
        (
            "dataset: cifar\nkind: permuted\nscenario: class-incremental\ntasks: 2\n".into(),
            "unknown dataset `cifar`",
        ),
        (
            "dataset: mnist\nkind: permuted\nscenario: sideways\ntasks: 2\n".into(),
            "scenario",
        ),
        (
            "dataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 2\nclass_output: seen-so-far\n".into(),
            "key `class_output`: only applies to the class-incremental scenario",
        ),
        (
            format!("{base}kind: split\nclass_output: active\n"),
            "class_output",
        ),
    ];
    for (text, expected) in cases {
        let e = error_of(&text);
        assert!(e.contains("tasks/bad.yaml"), "{e}");
        assert!(e.contains(expected), "expected `{expected}` in: {e}");
    }
}

#[test]
fn a_missing_dataset_is_reported_with_where_it_was_looked_for() {
    let err = clbench::data::find("no-such-set").unwrap_err();
    assert!(err.to_string().contains("unknown dataset"));
    // A stream on a dataset that is absent from every search path names the file.
    let e = StreamError::Data {
        path: "tasks/x.yaml".into(),
        source: clbench::data::DataError::NotFound {
            name: "fashion-mnist".into(),
            searched: "a, b".into(),
            hint: "h".into(),
        },
    };
    assert!(e
        .to_string()
        .starts_with("tasks/x.yaml: dataset `fashion-mnist` not found"));
}

#[test]
fn a_validation_stream_holds_out_training_images_and_never_reads_the_test_set() {
    let full = stream("split-mnist-domain-il.yaml", 3);
    let val = stream("split-mnist-domain-il-validation.yaml", 3);
    let (train, held) = (&val.dataset.train, &val.dataset.test);
    // 10% of every class, taken from the training split only.
    assert_eq!(train.len() + held.len(), full.dataset.train.len());
    for class in 0..10u8 {
        let n = full
            .dataset
            .train
            .labels
            .iter()
            .filter(|&&l| l == class)
            .count();
        let h = held.labels.iter().filter(|&&l| l == class).count();
        assert_eq!(h, (n as f64 * 0.1).round() as usize, "class {class}");
    }
    // Every held-out image is a training image, none is a test image.
    let key = |s: &clbench::data::Split, i: usize| {
        s.images[i * IMAGE_PIXELS..(i + 1) * IMAGE_PIXELS].to_vec()
    };
    let train_images: std::collections::HashSet<Vec<u8>> = (0..full.dataset.train.len())
        .map(|i| key(&full.dataset.train, i))
        .collect();
    let test_images: std::collections::HashSet<Vec<u8>> = (0..full.dataset.test.len())
        .map(|i| key(&full.dataset.test, i))
        .collect();
    let held_set: std::collections::HashSet<Vec<u8>> =
        (0..held.len()).map(|i| key(held, i)).collect();
    assert!((0..held.len()).all(|i| train_images.contains(&key(held, i))));
    assert!(
        (0..held.len())
            .filter(|&i| test_images.contains(&key(held, i)))
            .count()
            < 10,
        "MNIST has a handful of duplicate images across its splits, no more"
    );
    // No held-out image is trained on.
    assert!(
        (0..train.len())
            .filter(|&i| held_set.contains(&key(train, i)))
            .count()
            < 10
    );
    // The same images are held out whatever the run's seed.
    let other = stream("split-mnist-domain-il-validation.yaml", 4);
    assert_eq!(other.dataset.test.labels, held.labels);
    assert_eq!(other.dataset.test.images, held.images);
    // The tasks are the same tasks, scored on the held-out images of their classes.
    assert_eq!(val.tasks[2].classes, full.tasks[2].classes);
    assert_eq!(
        val.tasks.iter().map(|t| t.test.len()).sum::<usize>(),
        held.len()
    );
}

#[test]
fn a_validation_fraction_outside_zero_one_is_refused_with_the_key_named() {
    for bad in ["0", "1", "1.5", "-0.1"] {
        let text = format!(
            "dataset: mnist\nkind: split\nscenario: domain-incremental\nvalidation: {bad}\n"
        );
        let e = StreamSpec::from_yaml(&text, Path::new("v.yaml"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("validation") && e.contains("(0, 1)") && e.contains("v.yaml"),
            "{e}"
        );
    }
}

/// `pad: 2` (as the reference's `Pad(2)`): each task's permutation is a bijection of the 1024
/// positions of the padded image, the 240 positions that hold padding are zeros and differ
/// between tasks, and every other pixel is the image's.
#[test]
fn padding_comes_before_the_permutation() {
    let s =
        inline("dataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 3\npad: 2\n");
    assert_eq!((s.image_side(), s.image_pixels()), (32, 1024));
    let padding = |p: usize| {
        let (r, c) = (p / 32, p % 32);
        !(2..30).contains(&r) || !(2..30).contains(&c)
    };
    assert_eq!((0..1024).filter(|&p| padding(p)).count(), 240);
    let mut zero_sets = Vec::new();
    for t in 0..3 {
        let Transform::Permute { source, .. } = &s.tasks[t].transform else {
            panic!("task {t} is not permuted")
        };
        let mut sorted: Vec<u16> = source.to_vec();
        sorted.sort_unstable();
        assert_eq!(
            sorted,
            (0..1024u16).collect::<Vec<_>>(),
            "task {t}: a bijection of 1024"
        );
        let from_padding: Vec<usize> = (0..1024).filter(|&o| padding(source[o] as usize)).collect();
        assert_eq!(from_padding.len(), 240);
        let mut batch = Batch::default();
        let indices: Vec<u32> = s.tasks[t].train[..20].to_vec();
        s.train_batch(t, &indices, &mut batch);
        assert_eq!(batch.pixels.len(), 20 * 1024);
        for (k, &i) in indices.iter().enumerate() {
            let img = s.dataset.train.image(i as usize);
            let out = &batch.pixels[k * 1024..(k + 1) * 1024];
            for (o, &src) in source.iter().enumerate() {
                let src = src as usize;
                let want = if padding(src) {
                    0.0
                } else {
                    img[(src / 32 - 2) * 28 + (src % 32 - 2)] as f32 * (1.0 / 255.0)
                };
                assert_eq!(out[o], want);
            }
        }
        zero_sets.push(from_padding);
    }
    assert_ne!(zero_sets[0], zero_sets[1]);
    assert_ne!(zero_sets[1], zero_sets[2]);
    // Without `pad`, the same stream keeps its 784 positions and its permutations.
    let plain = inline("dataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 3\n");
    assert_eq!(plain.image_pixels(), IMAGE_PIXELS);
    let Transform::Permute { source, .. } = &plain.tasks[1].transform else {
        panic!()
    };
    let Transform::Permute { source: again, .. } = &Transform::permutation(0, 1, 28) else {
        panic!()
    };
    assert_eq!(source, again);
}

/// A rotation turns the padded image about its centre: by 0° it is the padded image.
#[test]
fn padded_rotation_turns_the_padded_image() {
    let s = inline(
        "dataset: mnist\nkind: rotated\nscenario: domain-incremental\nangles: [0, 90]\npad: 3\n",
    );
    assert_eq!(s.image_side(), 34);
    let mut batch = Batch::default();
    s.train_batch(0, &[5], &mut batch);
    let img = s.dataset.train.image(5);
    for (p, &v) in batch.pixels.iter().enumerate() {
        let (r, c) = (p / 34, p % 34);
        let want = if (3..31).contains(&r) && (3..31).contains(&c) {
            img[(r - 3) * 28 + c - 3] as f32 * (1.0 / 255.0)
        } else {
            0.0
        };
        assert_eq!(v, want, "pixel {p}");
    }
    let mut turned = Batch::default();
    s.train_batch(1, &[5], &mut turned);
    // A quarter turn counter-clockwise: top-right goes to top-left.
    for r in 0..34 {
        for c in 0..34 {
            assert_eq!(turned.pixels[r * 34 + c], batch.pixels[c * 34 + (33 - r)]);
        }
    }
}

#[test]
fn pad_is_bounded_with_the_key_named() {
    let e = error_of(
        "dataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 2\npad: 37\n",
    );
    assert!(
        e.contains("tasks/bad.yaml") && e.contains("key `pad`") && e.contains("at most 36"),
        "{e}"
    );
    let e = error_of(
        "dataset: mnist\nkind: permuted\nscenario: domain-incremental\ntasks: 2\npad: -1\n",
    );
    assert!(e.contains("tasks/bad.yaml") && e.contains("pad"), "{e}");
}

/// `angles: {from, step, jitter, tasks}`: task i is rotated by `from + step·i − jitter·u_i`
/// (Stable SGD's rotated MNIST), the jitter drawn from the stream's seed: each angle in its
/// window, the same for a seed, other for another; the built tasks rotate by them.
#[test]
fn stepped_angles_with_jitter_follow_the_stable_sgd_rule() {
    let text = "dataset: mnist\nkind: rotated\nscenario: domain-incremental\nangles: {from: 0, step: 10, jitter: 10, tasks: 20}\n";
    let spec = StreamSpec::from_yaml(text, Path::new("inline.yaml")).unwrap();
    assert_eq!(spec.num_tasks(), 20);
    let a = spec.angle_list(1);
    for (i, &deg) in a.iter().enumerate() {
        let top = 10.0 * i as f64;
        assert!(deg <= top && deg > top - 10.0, "task {}: {deg}", i + 1);
    }
    assert_eq!(a, spec.angle_list(1));
    assert_ne!(a, spec.angle_list(2));
    // Without a jitter: evenly spaced steps, the same for every seed.
    let even =
        StreamSpec::from_yaml(&text.replace("jitter: 10, ", ""), Path::new("inline.yaml")).unwrap();
    assert_eq!(
        even.angle_list(3),
        (0..20).map(|i| 10.0 * i as f64).collect::<Vec<_>>()
    );
    let s = inline(text);
    for (t, task) in s.tasks.iter().enumerate().take(3) {
        match &task.transform {
            Transform::Rotate { degrees, .. } => {
                assert_eq!(*degrees, spec.angle_list(s.seed)[t])
            }
            other => panic!("task {t}: {other:?}"),
        }
    }
    for (angles, expected) in [
        (
            "{from: 0, step: 10, jitter: -1, tasks: 3}",
            "`jitter` must be a finite number ≥ 0",
        ),
        (
            "{from: 0, step: 10, jitter: 1, tasks: 0}",
            "expected at least 1 task, got 0",
        ),
        (
            "{from: 0, step: .inf, jitter: 1, tasks: 2}",
            "is not a finite number",
        ),
    ] {
        let e = StreamSpec::from_yaml(
            &text.replace("{from: 0, step: 10, jitter: 10, tasks: 20}", angles),
            Path::new("bad.yaml"),
        )
        .unwrap_err()
        .to_string();
        assert!(
            e.contains(expected) && e.contains("bad.yaml"),
            "{angles}: {e}"
        );
    }
}
