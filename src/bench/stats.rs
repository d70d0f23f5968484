//! Latency percentiles and the median of repeated runs.

use std::time::Duration;

/// Latency percentiles of one run, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Percentiles {
    /// Median.
    pub p50_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// 99.9th percentile.
    pub p999_ms: f64,
}

/// Percentiles of `samples` (nearest-rank method); zeros if there are none.
pub fn percentiles(samples: &[Duration]) -> Percentiles {
    let mut sorted = samples.to_vec();
    sorted.sort_unstable();
    let at = |fraction: f64| -> f64 {
        if sorted.is_empty() {
            return 0.0;
        }
        // Nearest rank: the smallest value with at least `fraction` of the
        // samples at or below it.
        let rank = (fraction * sorted.len() as f64).ceil() as usize;
        sorted[rank.clamp(1, sorted.len()) - 1].as_secs_f64() * 1e3
    };
    Percentiles {
        p50_ms: at(0.50),
        p90_ms: at(0.90),
        p99_ms: at(0.99),
        p999_ms: at(0.999),
    }
}

/// The index of the median of `values` (the lower one for an even count).
pub fn median_index(values: &[f64]) -> usize {
    let mut order: Vec<usize> = (0..values.len()).collect();
    order.sort_by(|&a, &b| values[a].total_cmp(&values[b]));
    order[(values.len().saturating_sub(1)) / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let samples: Vec<Duration> = (1..=1000).map(Duration::from_millis).collect();
        let p = percentiles(&samples);
        assert_eq!(p.p50_ms, 500.0);
        assert_eq!(p.p90_ms, 900.0);
        assert_eq!(p.p99_ms, 990.0);
        assert_eq!(p.p999_ms, 999.0);
        assert_eq!(percentiles(&[]), Percentiles::default());
        assert_eq!(percentiles(&[Duration::from_millis(7)]).p999_ms, 7.0);
    }

    #[test]
    fn median_of_runs() {
        assert_eq!(median_index(&[3.0, 1.0, 2.0]), 2);
        assert_eq!(median_index(&[5.0]), 0);
        assert_eq!(median_index(&[4.0, 1.0, 3.0, 2.0]), 3);
    }
}
