//! Statistics over seeds: descriptive statistics, Student's t confidence intervals, and the
//! paired tests (t and Wilcoxon signed-rank) used to compare methods that share seeds.

/// Arithmetic mean (`None` when empty).
pub fn mean(xs: &[f64]) -> Option<f64> {
    (!xs.is_empty()).then(|| xs.iter().sum::<f64>() / xs.len() as f64)
}

/// Sample standard deviation with n−1 in the denominator (`None` when n < 2).
pub fn sd(xs: &[f64]) -> Option<f64> {
    let m = mean(xs)?;
    (xs.len() >= 2)
        .then(|| (xs.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (xs.len() - 1) as f64).sqrt())
}

/// Standard error of the mean, sd/√n (`None` when n < 2).
pub fn sem(xs: &[f64]) -> Option<f64> {
    sd(xs).map(|s| s / (xs.len() as f64).sqrt())
}

/// Half-width of the two-sided confidence interval of the mean at `level` (e.g. 0.95), from
/// Student's t with n−1 degrees of freedom (`None` when n < 2).
pub fn ci_half_width(xs: &[f64], level: f64) -> Option<f64> {
    let s = sem(xs)?;
    Some(t_quantile(0.5 + level / 2.0, (xs.len() - 1) as f64) * s)
}

/// ln Γ(x) for x > 0 (Lanczos approximation, g = 7, n = 9; relative error < 1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        return (std::f64::consts::PI / (std::f64::consts::PI * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, &c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

/// The regularized incomplete beta function I_x(a, b) (continued fraction, Lentz's method).
pub fn inc_beta(a: f64, b: f64, x: f64) -> f64 {
    if x <= 0.0 {
        return 0.0;
    }
    if x >= 1.0 {
        return 1.0;
    }
    let ln_front = ln_gamma(a + b) - ln_gamma(a) - ln_gamma(b) + a * x.ln() + b * (1.0 - x).ln();
    // The continued fraction converges fast for x < (a+1)/(a+b+2); use symmetry otherwise.
    if x > (a + 1.0) / (a + b + 2.0) {
        return 1.0 - inc_beta(b, a, 1.0 - x);
    }
    const TINY: f64 = 1e-300;
    let mut c = 1.0;
    let mut d = 1.0 - (a + b) * x / (a + 1.0);
    if d.abs() < TINY {
        d = TINY;
    }
    d = 1.0 / d;
    let mut f = d;
    for m in 1..500 {
        let m = m as f64;
        // Even step.
        let num = m * (b - m) * x / ((a + 2.0 * m - 1.0) * (a + 2.0 * m));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + num / c;
        if c.abs() < TINY {
            c = TINY;
        }
        f *= d * c;
        // Odd step.
        let num = -(a + m) * (a + b + m) * x / ((a + 2.0 * m) * (a + 2.0 * m + 1.0));
        d = 1.0 + num * d;
        d = if d.abs() < TINY { 1.0 / TINY } else { 1.0 / d };
        c = 1.0 + num / c;
        if c.abs() < TINY {
            c = TINY;
        }
        let delta = d * c;
        f *= delta;
        if (delta - 1.0).abs() < 1e-15 {
            break;
        }
    }
    ln_front.exp() * f / a
}

/// P(T ≤ t) for Student's t with `df` degrees of freedom.
pub fn t_cdf(t: f64, df: f64) -> f64 {
    let tail = 0.5 * inc_beta(df / 2.0, 0.5, df / (df + t * t));
    if t >= 0.0 {
        1.0 - tail
    } else {
        tail
    }
}

/// The `p`-quantile of Student's t with `df` degrees of freedom (bisection on [`t_cdf`]).
pub fn t_quantile(p: f64, df: f64) -> f64 {
    if p == 0.5 {
        return 0.0;
    }
    let (mut lo, mut hi) = (-1e4, 1e4);
    for _ in 0..200 {
        let mid = 0.5 * (lo + hi);
        if t_cdf(mid, df) < p {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    0.5 * (lo + hi)
}

/// Result of a paired t-test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct PairedT {
    /// Mean of the differences a − b.
    pub mean_diff: f64,
    /// The t statistic.
    pub t: f64,
    /// Two-sided p-value.
    pub p: f64,
}

/// Paired two-sided t-test of `a` against `b` (same length ≥ 2). With all differences equal the
/// statistic is undefined and the p-value is 1 if they are all zero, else 0.
pub fn paired_t_test(a: &[f64], b: &[f64]) -> Option<PairedT> {
    if a.len() != b.len() || a.len() < 2 {
        return None;
    }
    let d: Vec<f64> = a.iter().zip(b).map(|(x, y)| x - y).collect();
    let m = mean(&d)?;
    let s = sem(&d)?;
    if s == 0.0 {
        let p = if m == 0.0 { 1.0 } else { 0.0 };
        return Some(PairedT {
            mean_diff: m,
            t: if m == 0.0 {
                0.0
            } else {
                m.signum() * f64::INFINITY
            },
            p,
        });
    }
    let t = m / s;
    let p = 2.0 * (1.0 - t_cdf(t.abs(), (d.len() - 1) as f64));
    Some(PairedT {
        mean_diff: m,
        t,
        p: p.clamp(0.0, 1.0),
    })
}

/// Two-sided Wilcoxon signed-rank test of the paired differences `a − b`.
///
/// Zero differences are dropped (Wilcoxon's convention, SciPy's default). Without ties among the
/// remaining |differences| and n ≤ 50 the p-value is exact; otherwise it uses the normal
/// approximation with the tie correction of the variance (no continuity correction), as SciPy
/// does. Returns (W⁺, p), or `None` when no non-zero difference remains.
pub fn wilcoxon_signed_rank(a: &[f64], b: &[f64]) -> Option<(f64, f64)> {
    if a.len() != b.len() {
        return None;
    }
    let d: Vec<f64> = a
        .iter()
        .zip(b)
        .map(|(x, y)| x - y)
        .filter(|d| *d != 0.0)
        .collect();
    let n = d.len();
    if n == 0 {
        return None;
    }
    // Average ranks of |d|.
    let mut idx: Vec<usize> = (0..n).collect();
    idx.sort_by(|&i, &j| d[i].abs().total_cmp(&d[j].abs()));
    let mut ranks = vec![0.0; n];
    let mut ties = false;
    let mut tie_term = 0.0;
    let mut i = 0;
    while i < n {
        let mut j = i;
        while j + 1 < n && d[idx[j + 1]].abs() == d[idx[i]].abs() {
            j += 1;
        }
        let avg = (i + j) as f64 / 2.0 + 1.0;
        for &k in &idx[i..=j] {
            ranks[k] = avg;
        }
        let t = (j - i + 1) as f64;
        if t > 1.0 {
            ties = true;
            tie_term += t * t * t - t;
        }
        i = j + 1;
    }
    let w_plus: f64 = d
        .iter()
        .zip(&ranks)
        .filter(|(d, _)| **d > 0.0)
        .map(|(_, r)| r)
        .sum();
    let total = (n * (n + 1)) as f64 / 2.0;
    if !ties && n <= 50 {
        // Exact null distribution of W⁺: counts of subsets of {1..n} by rank sum.
        let max = n * (n + 1) / 2;
        let mut counts = vec![0f64; max + 1];
        counts[0] = 1.0;
        for r in 1..=n {
            for s in (r..=max).rev() {
                counts[s] += counts[s - r];
            }
        }
        let all: f64 = counts.iter().sum();
        let w = w_plus.round() as usize;
        let lower: f64 = counts[..=w].iter().sum::<f64>() / all;
        let upper: f64 = counts[w..].iter().sum::<f64>() / all;
        return Some((w_plus, (2.0 * lower.min(upper)).min(1.0)));
    }
    let mean_w = total / 2.0;
    let var = (n * (n + 1) * (2 * n + 1)) as f64 / 24.0 - tie_term / 48.0;
    if var <= 0.0 {
        return Some((w_plus, 1.0));
    }
    let z = (w_plus - mean_w) / var.sqrt();
    Some((w_plus, (2.0 * normal_sf(z.abs())).min(1.0)))
}

/// P(Z > z) for a standard normal (via the complementary error function).
pub fn normal_sf(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// The complementary error function (W. J. Cody's rational approximations via the incomplete
/// gamma relation erfc(x) = Q(1/2, x²) for x ≥ 0).
fn erfc(x: f64) -> f64 {
    if x < 0.0 {
        return 2.0 - erfc(-x);
    }
    // Q(1/2, x²) = 1 − P(1/2, x²); compute through the incomplete beta limit is awkward, so use
    // the continued fraction of the upper incomplete gamma for large x and the series otherwise.
    let a = 0.5;
    let z = x * x;
    if z < a + 1.0 {
        // Series for P(a, z).
        let mut sum = 1.0 / a;
        let mut term = sum;
        let mut n = a;
        for _ in 0..500 {
            n += 1.0;
            term *= z / n;
            sum += term;
            if term.abs() < sum.abs() * 1e-16 {
                break;
            }
        }
        1.0 - sum * (-z + a * z.ln() - ln_gamma(a)).exp()
    } else {
        // Continued fraction for Q(a, z).
        const TINY: f64 = 1e-300;
        let mut b = z + 1.0 - a;
        let mut c = 1.0 / TINY;
        let mut d = 1.0 / b;
        let mut h = d;
        for i in 1..500 {
            let an = -(i as f64) * (i as f64 - a);
            b += 2.0;
            d = an * d + b;
            if d.abs() < TINY {
                d = TINY;
            }
            c = b + an / c;
            if c.abs() < TINY {
                c = TINY;
            }
            d = 1.0 / d;
            let delta = d * c;
            h *= delta;
            if (delta - 1.0).abs() < 1e-16 {
                break;
            }
        }
        (-z + a * z.ln() - ln_gamma(a)).exp() * h
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) {
        assert!((a - b).abs() < tol, "{a} vs {b}");
    }

    #[test]
    fn hand_values() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), Some(5.0));
        // Σ(x−5)² = 32, /7.
        close(sd(&xs).unwrap(), (32.0f64 / 7.0).sqrt(), 1e-12);
        close(
            sem(&xs).unwrap(),
            (32.0f64 / 7.0).sqrt() / 8f64.sqrt(),
            1e-12,
        );
        assert_eq!(sd(&[1.0]), None);
        assert_eq!(mean(&[]), None);
    }

    #[test]
    fn t_quantiles_match_tables() {
        close(t_quantile(0.975, 1.0), 12.706_204_736, 1e-6);
        close(t_quantile(0.975, 4.0), 2.776_445_105, 1e-8);
        close(t_quantile(0.975, 9.0), 2.262_157_163, 1e-8);
        close(t_quantile(0.975, 30.0), 2.042_272_456, 1e-8);
        close(t_cdf(0.0, 5.0), 0.5, 1e-15);
        // 95% CI of [1, 2, 3, 4, 5]: 2.776445 · √2.5/√5.
        close(
            ci_half_width(&[1.0, 2.0, 3.0, 4.0, 5.0], 0.95).unwrap(),
            2.776_445_105 * (0.5f64).sqrt(),
            1e-8,
        );
    }

    #[test]
    fn normal_tail() {
        close(normal_sf(1.959_963_985), 0.025, 1e-9);
        close(normal_sf(0.0), 0.5, 1e-15);
        close(normal_sf(3.0), 0.001_349_898_031_630_094_6, 1e-12);
    }
}
