//! Descriptive statistics over seeds.

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_values() {
        let xs = [2.0, 4.0, 4.0, 4.0, 5.0, 5.0, 7.0, 9.0];
        assert_eq!(mean(&xs), Some(5.0));
        // Σ(x−5)² = 32, /7.
        assert!((sd(&xs).unwrap() - (32.0f64 / 7.0).sqrt()).abs() < 1e-12);
        assert!((sem(&xs).unwrap() - (32.0f64 / 7.0).sqrt() / 8f64.sqrt()).abs() < 1e-12);
        assert_eq!(sd(&[1.0]), None);
        assert_eq!(mean(&[]), None);
    }
}
