//! The one output format of every benchmark: a Markdown table row with our figure, the
//! reference measured in the same run, their ratio and the goal.

use std::time::Duration;

/// One line of the results table.
#[derive(Debug, Clone)]
pub struct Row {
    pub name: String,
    pub ours: String,
    pub reference: String,
    /// ours / reference, when both are numbers of the same unit.
    pub ratio: Option<f64>,
    pub goal: String,
    /// Whether the goal was met; `None` when the goal cannot be judged from this row.
    pub met: Option<bool>,
}

#[allow(dead_code)]
pub const HEADER: &str =
    "| benchmark | ours | reference | ratio | goal | met |\n|---|---|---|---|---|---|";

impl Row {
    pub fn markdown(&self) -> String {
        format!(
            "| {} | {} | {} | {} | {} | {} |",
            self.name,
            self.ours,
            self.reference,
            self.ratio
                .map(|r| format!("{r:.2}×"))
                .unwrap_or_else(|| "–".into()),
            self.goal,
            match self.met {
                Some(true) => "yes",
                Some(false) => "**no**",
                None => "–",
            }
        )
    }
}

/// p50 and p99 of some samples (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    pub p50: Duration,
    pub p99: Duration,
    pub n: usize,
}

pub fn percentiles(samples: &[Duration]) -> Percentiles {
    let mut v = samples.to_vec();
    v.sort();
    let rank = |p: f64| -> Duration {
        if v.is_empty() {
            return Duration::ZERO;
        }
        let k = ((p * v.len() as f64).ceil() as usize).clamp(1, v.len());
        v[k - 1]
    };
    Percentiles {
        p50: rank(0.50),
        p99: rank(0.99),
        n: v.len(),
    }
}

pub fn ms(d: Duration) -> String {
    let ms = d.as_secs_f64() * 1e3;
    if ms < 10.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.1} ms")
    }
}

pub fn p50_p99(p: &Percentiles) -> String {
    format!("p50 {} / p99 {}", ms(p.p50), ms(p.p99))
}

/// Ratio of two durations (ours over reference), guarding a zero reference.
pub fn ratio(ours: Duration, reference: Duration) -> Option<f64> {
    let r = reference.as_secs_f64();
    (r > 0.0).then(|| ours.as_secs_f64() / r)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        let p = percentiles(&s);
        assert_eq!(p.p50, Duration::from_millis(50));
        assert_eq!(p.p99, Duration::from_millis(99));
        let one = percentiles(&[Duration::from_millis(7)]);
        assert_eq!(
            (one.p50, one.p99),
            (Duration::from_millis(7), Duration::from_millis(7))
        );
    }
}
