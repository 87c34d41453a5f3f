//! Statistical tests against published reference values.

use clbench::report::stats::{paired_t_test, sd, sem, wilcoxon_signed_rank};

/// Student's sleep data (Cushny & Peebles 1905), as in R's `datasets::sleep`.
const GROUP1: [f64; 10] = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0];
const GROUP2: [f64; 10] = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4];

#[test]
fn paired_t_test_matches_r_on_the_sleep_data() {
    // R: t.test(extra ~ group, data = sleep, paired = TRUE)
    //    t = -4.0621, df = 9, p-value = 0.002833, mean difference -1.58
    let r = paired_t_test(&GROUP1, &GROUP2).unwrap();
    assert!((r.mean_diff + 1.58).abs() < 1e-12);
    assert!((r.t + 4.0621).abs() < 5e-5, "{}", r.t);
    assert!((r.p - 0.002833).abs() < 5e-7, "{}", r.p);
}

#[test]
fn wilcoxon_exact_matches_scipy_documentation() {
    // SciPy's `wilcoxon` docs: differences of Darwin's corn heights, statistic 24, p 0.041259765625.
    let d = [
        6.0, 8.0, 14.0, 16.0, 23.0, 24.0, 28.0, 29.0, 41.0, -48.0, 49.0, 56.0, 60.0, -67.0, 75.0,
    ];
    let zeros = [0.0; 15];
    let (w_plus, p) = wilcoxon_signed_rank(&d, &zeros).unwrap();
    assert_eq!(120.0 - w_plus, 24.0);
    assert!((p - 0.041259765625).abs() < 1e-12, "{p}");
}

#[test]
fn wilcoxon_with_ties_and_zeros_uses_the_corrected_normal_approximation() {
    // Sleep data: one zero difference is dropped (n = 9), one tie (1.3, 1.3); W+ = 0.
    // Var = 9·10·19/24 − (2³−2)/48 = 71.125, z = −22.5/√71.125 = −2.66789…, two-sided
    // p = 0.0076317 (R: wilcox.test(..., paired = TRUE, exact = FALSE, correct = FALSE)).
    let (w_plus, p) = wilcoxon_signed_rank(&GROUP1, &GROUP2).unwrap();
    assert_eq!(w_plus, 0.0);
    assert!((p - 0.0076317).abs() < 2e-6, "{p}");
}

#[test]
fn spread_of_the_sleep_differences() {
    let d: Vec<f64> = GROUP2.iter().zip(GROUP1).map(|(a, b)| a - b).collect();
    // R: sd(sleep$extra[11:20] - sleep$extra[1:10]) = 1.229995
    assert!((sd(&d).unwrap() - 1.229995).abs() < 1e-6);
    assert!((sem(&d).unwrap() - 1.229995 / 10f64.sqrt()).abs() < 1e-6);
}

#[test]
fn degenerate_inputs() {
    assert!(paired_t_test(&[1.0], &[2.0]).is_none());
    assert_eq!(paired_t_test(&[1.0, 2.0], &[1.0, 2.0]).unwrap().p, 1.0);
    assert!(wilcoxon_signed_rank(&[1.0, 2.0], &[1.0, 2.0]).is_none());
}
