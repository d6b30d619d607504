//! ADWIN (ADaptive WINdowing; Bifet & Gavaldà, 2007): a window over a
//! real-valued stream (the model's errors as 0/1, or absolute errors) that
//! drops its oldest part whenever the means of an older and a newer part differ
//! by more than chance allows, and reports drift when it does.
//!
//! The window is an exponential histogram: row `i` holds up to `max_buckets`
//! buckets of `2^i` values each, stored as their total and the sum of squared
//! deviations from their mean. A new value goes into row 0; when a row holds one
//! bucket too many its two oldest merge into one bucket of the next row. Every
//! `clock` updates, once the window is longer than `grace_period`, every boundary
//! between buckets, oldest first, splits the window into `W0` (older, `n0`
//! values) and `W1` (newer, `n1`); the split is a cut when both parts have at
//! least `min_window_length` values and
//!
//! ```text
//! |mean(W0) − mean(W1)| > √(2·m·σ²·δ') + (2/3)·δ'·m,
//!     m  = 1/(n0 − min_window_length + 1) + 1/(n1 − min_window_length + 1),
//!     δ' = ln(2·ln(width) / delta),   σ² = the window's variance.
//! ```
//!
//! At a cut the oldest bucket is dropped and the scan starts again on the
//! shorter window, until no boundary cuts.
//!
//! This follows River 0.26's `river.drift.ADWIN` (its `AdaptiveWindowing`,
//! `rust_src/adwin.rs`, a port of the earlier `adwin_c.pyx`) operation for
//! operation, with the same defaults (delta 0.002, clock 32, max_buckets 5,
//! min_window_length 5, grace_period 10), so detections agree row for row; the
//! tests replay streams through both (scripts/compare/river_adwin.py). Like
//! River's `ADWIN`, a detector that has just reported drift starts a new window
//! with the next value; with [`Adwin::keep_window`] it keeps the shrunk window
//! instead, as the paper and River's inner `AdaptiveWindowing` do.
//!
//! What it does not do: decide what a detection means for the daemon (that is
//! `watch`), or look at the inputs (`drift`).

/// One bucket of the histogram: `2^row` values, summarised.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    total: f64,
    /// Sum of squared deviations of the bucket's values from their mean.
    variance: f64,
}

/// The ADWIN drift detector over a real-valued stream.
#[derive(Debug, Clone)]
pub struct Adwin {
    /// Confidence of the cut test; smaller cuts less often.
    pub delta: f64,
    /// Test for cuts every `clock` updates (0 counts as 1).
    pub clock: u64,
    /// Buckets of each size kept before the two oldest merge (0 counts as 1;
    /// River panics below 2).
    pub max_buckets: usize,
    /// The fewest values either side of a cut may have.
    pub min_window_length: u64,
    /// No test until the window is longer than this.
    pub grace_period: u64,
    /// After a detection, keep the shrunk window (the paper, River's inner
    /// `AdaptiveWindowing`) rather than start a new one with the next value
    /// (River's `drift.ADWIN`, the default).
    pub keep_window: bool,
    /// `rows[i]` holds buckets of `2^i` values, oldest first; row 0 is the
    /// newest and always exists.
    rows: Vec<Vec<Bucket>>,
    width: u64,
    total: f64,
    /// Sum of squared deviations from the window's mean (River's `variance`).
    sum_sq: f64,
    tick: u64,
    drift: bool,
    since_cut: u64,
}

impl Default for Adwin {
    fn default() -> Self {
        Self::new(0.002)
    }
}

impl Adwin {
    /// River's defaults with the given `delta`.
    pub fn new(delta: f64) -> Adwin {
        Adwin {
            delta,
            clock: 32,
            max_buckets: 5,
            min_window_length: 5,
            grace_period: 10,
            keep_window: false,
            rows: vec![Vec::with_capacity(6)],
            width: 0,
            total: 0.0,
            sum_sq: 0.0,
            tick: 0,
            drift: false,
            since_cut: 0,
        }
    }

    /// The same detector keeping (or not) the shrunk window after a detection.
    pub fn with_keep_window(mut self, keep: bool) -> Adwin {
        self.keep_window = keep;
        self
    }

    /// Adds one value (for the daemon: 1.0 for a wrong answer, 0.0 for a right
    /// one; or an absolute error). A NaN makes the window's mean NaN until the
    /// detector starts afresh, and no cut is found meanwhile (as in River).
    pub fn update(&mut self, x: f64) {
        if self.drift && !self.keep_window {
            self.clear();
        }
        self.insert(x);
        self.drift = self.detect_change();
        if self.drift {
            self.since_cut = self.width;
        } else if self.since_cut > 0 {
            self.since_cut += 1;
        }
    }

    /// True only right after the update that shrank the window.
    pub fn drift_detected(&self) -> bool {
        self.drift
    }

    /// The window's length.
    pub fn width(&self) -> u64 {
        self.width
    }

    /// The window's mean (0 for an empty window).
    pub fn estimation(&self) -> f64 {
        if self.width == 0 {
            0.0
        } else {
            self.total / self.width as f64
        }
    }

    /// The window's (population) variance, the `σ²` of the cut test. River's
    /// `ADWIN.variance` is `width()` times this: the sum of squared deviations.
    pub fn variance(&self) -> f64 {
        if self.width == 0 {
            0.0
        } else {
            self.sum_sq / self.width as f64
        }
    }

    /// The sum of the window's values.
    pub fn total(&self) -> f64 {
        self.total
    }

    /// How many values back the change began: at a detection, the number of
    /// values in the window that was kept (River's width after the drop); one
    /// more with each later update, until the next detection. 0 before the
    /// first detection.
    pub fn rows_since_cut(&self) -> u64 {
        self.since_cut
    }

    /// An empty window, as River's `ADWIN._reset` leaves it.
    fn clear(&mut self) {
        self.rows.truncate(1);
        for row in &mut self.rows {
            row.clear();
        }
        self.width = 0;
        self.total = 0.0;
        self.sum_sq = 0.0;
        self.tick = 0;
    }

    fn insert(&mut self, x: f64) {
        if self.rows.is_empty() {
            self.rows.push(Vec::with_capacity(self.max_buckets + 1));
        }
        self.rows[0].push(Bucket {
            total: x,
            variance: 0.0,
        });
        self.width += 1;
        // River's order of operations, for identical rounding.
        let w = self.width as f64;
        if self.width > 1 {
            let d = x - self.total / (w - 1.0);
            self.sum_sq += (w - 1.0) * d * d / w;
        }
        self.total += x;
        self.merge();
    }

    /// Merges the two oldest buckets of every row that has one too many.
    fn merge(&mut self) {
        let max = self.max_buckets.max(1);
        let mut i = 0;
        // River merges when a row reaches exactly max + 1; `>` is the same for a
        // fixed `max_buckets` and cannot let a row grow if it is lowered.
        while self.rows[i].len() > max {
            let n = bucket_len(i);
            let (a, b) = (self.rows[i][0], self.rows[i][1]);
            let (mu_a, mu_b) = (a.total / n, b.total / n);
            let merged = Bucket {
                total: a.total + b.total,
                variance: a.variance + b.variance + n * 0.5 * (mu_a - mu_b) * (mu_a - mu_b),
            };
            if i + 1 == self.rows.len() {
                self.rows.push(Vec::with_capacity(max + 1));
            }
            self.rows[i + 1].push(merged);
            self.rows[i].drain(..2);
            i += 1;
        }
    }

    /// Drops the oldest bucket; false if there is none.
    fn drop_oldest(&mut self) -> bool {
        // A merge leaves a row empty only when `max_buckets` is 1 (River's port
        // panics there); skip such rows so that the oldest bucket is found.
        while self.rows.len() > 1 && self.rows.last().is_some_and(Vec::is_empty) {
            self.rows.pop();
        }
        let last = self.rows.len() - 1;
        let Some(&b) = self.rows[last].first() else {
            return false;
        };
        let n = bucket_len(last);
        let mu = b.total / n;
        self.width -= 1u64 << last;
        self.total -= b.total;
        let w = self.width as f64;
        let mu_window = self.total / w;
        self.sum_sq -= b.variance + n * w * (mu - mu_window) * (mu - mu_window) / (n + w);
        self.rows[last].remove(0);
        if self.rows[last].is_empty() && last > 0 {
            self.rows.pop();
        }
        true
    }

    /// Every `clock` updates, drops old buckets while some boundary cuts;
    /// true when one did.
    fn detect_change(&mut self) -> bool {
        self.tick += 1;
        if !self.tick.is_multiple_of(self.clock.max(1)) || self.width <= self.grace_period {
            return false;
        }
        let min = self.min_window_length as f64;
        let mut cut = false;
        'scan: loop {
            let (mut n0, mut n1) = (0.0, self.width as f64);
            let (mut u0, mut u1) = (0.0, self.total);
            // Oldest row first, oldest bucket first within a row.
            for i in (0..self.rows.len()).rev() {
                let n = bucket_len(i);
                let len = self.rows[i].len();
                for k in 0..len {
                    let t = self.rows[i][k].total;
                    n0 += n;
                    n1 -= n;
                    u0 += t;
                    u1 -= t;
                    if i == 0 && k + 1 == len {
                        // The newest value: no boundary left to test.
                        break 'scan;
                    }
                    let delta_mean = u0 / n0 - u1 / n1;
                    if n1 >= min && n0 >= min && self.cuts(n0, n1, delta_mean) {
                        cut = true;
                        if !self.drop_oldest() {
                            break 'scan;
                        }
                        continue 'scan;
                    }
                }
            }
            break;
        }
        cut
    }

    /// River's `_evaluate_cut`: the Hoeffding-Bernstein bound of the paper with
    /// the window's variance.
    fn cuts(&self, n0: f64, n1: f64, delta_mean: f64) -> bool {
        let w = self.width as f64;
        let min = self.min_window_length as f64;
        let delta_prime = (2.0 * w.ln() / self.delta).ln();
        let m_recip = 1.0 / (n0 - min + 1.0) + 1.0 / (n1 - min + 1.0);
        let epsilon = (2.0 * m_recip * (self.sum_sq / w) * delta_prime).sqrt()
            + 2.0 / 3.0 * delta_prime * m_recip;
        delta_mean.abs() > epsilon
    }
}

/// Values per bucket in row `i`.
fn bucket_len(i: usize) -> f64 {
    (1u64 << i) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The hash detect.rs's tests use, which scripts/compare/river_adwin.py
    /// computes identically: `((i·2654435761 + c) mod 2³²) / 2³²`.
    fn u(i: u64, c: u64) -> f64 {
        ((i * 2_654_435_761 + c) % 4_294_967_296) as f64 / 4_294_967_296.0
    }

    /// 4,000 outcomes (1.0 = wrong): error rate `before` for rows 0..1500,
    /// `after` from then on.
    fn rates(before: f64, after: f64) -> Vec<f64> {
        (0..4000u64)
            .map(|i| {
                f64::from(u8::from(
                    u(i, 12_345) < if i < 1500 { before } else { after },
                ))
            })
            .collect()
    }

    /// 5,000 values, uniform on [0, 1) before row 2000 and on [0.3, 1.3) from it
    /// on: mean 0.5, then 0.8.
    fn real() -> Vec<f64> {
        (0..5000u64)
            .map(|i| u(i, 12_345) + if i >= 2000 { 0.3 } else { 0.0 })
            .collect()
    }

    /// `(row, width after the update)` for every detection.
    fn detections(a: &mut Adwin, xs: &[f64]) -> Vec<(usize, u64)> {
        xs.iter()
            .enumerate()
            .filter_map(|(i, &x)| {
                a.update(x);
                a.drift_detected().then_some((i, a.width()))
            })
            .collect()
    }

    /// A River run: its detections, then width, total and `ADWIN.variance` (the
    /// sum of squared deviations) after the last row.
    struct River {
        hits: Vec<(usize, u64)>,
        width: u64,
        total: f64,
        sum_sq: f64,
    }

    fn check(name: &str, delta: f64, keep_window: bool, xs: &[f64], river: River) {
        let mut a = Adwin {
            keep_window,
            ..Adwin::new(delta)
        };
        let what = format!("{name}, delta {delta}, keep_window {keep_window}");
        assert_eq!(detections(&mut a, xs), river.hits, "{what}");
        assert_eq!(a.width(), river.width, "{what}");
        assert!(
            (a.total() - river.total).abs() < 1e-9,
            "{what}: total {}",
            a.total()
        );
        let sum_sq = a.variance() * a.width() as f64;
        assert!(
            (sum_sq - river.sum_sq).abs() < 1e-9 * river.sum_sq,
            "{what}: sum of squares {sum_sq}"
        );
    }

    #[test]
    fn rising_error_rate_matches_river() {
        // river 0.26.1, drift.ADWIN() and drift.ADWIN()._helper (the window kept)
        // on 0.1 → 0.35 at row 1500: scripts/compare/river_adwin.py.
        let xs = rates(0.1, 0.35);
        let river = River {
            hits: vec![(1599, 448)],
            width: 2400,
            total: 840.0,
            sum_sq: 546.0000000000011,
        };
        check("rising", 0.002, false, &xs, river);
        let kept = River {
            hits: vec![(1599, 448), (1631, 352), (1663, 320), (1727, 320)],
            width: 2592,
            total: 885.0,
            sum_sq: 582.8298611111112,
        };
        check("rising", 0.002, true, &xs, kept);
    }

    #[test]
    fn falling_error_rate_matches_river() {
        // river 0.26.1, drift.ADWIN() and drift.ADWIN()._helper on 0.35 → 0.1.
        let xs = rates(0.35, 0.1);
        let river = River {
            hits: vec![(1631, 1120)],
            width: 2368,
            total: 235.0,
            sum_sq: 211.6786317567568,
        };
        check("falling", 0.002, false, &xs, river);
        let kept = River {
            hits: vec![(1631, 1120), (1663, 384), (1695, 352), (1727, 320)],
            width: 2592,
            total: 282.0,
            sum_sq: 251.31944444444412,
        };
        check("falling", 0.002, true, &xs, kept);
    }

    #[test]
    fn real_values_match_river_at_two_deltas() {
        // river 0.26.1, drift.ADWIN(delta=...) and its _helper on uniform values,
        // mean 0.5 then 0.8 from row 2000.
        let xs = real();
        let cases = [
            (
                0.002,
                false,
                vec![(2079, 256)],
                2920,
                2336.393231679669,
                243.26601722051788,
            ),
            (
                0.002,
                true,
                vec![(2079, 256), (2111, 224), (2143, 224), (2271, 288)],
                3016,
                2407.8537437329037,
                252.7348894355368,
            ),
            (
                0.05,
                false,
                vec![(2047, 192)],
                2952,
                2362.0135381514096,
                245.9533538888525,
            ),
            (
                0.05,
                true,
                vec![(2047, 192), (2079, 128), (2239, 256)],
                3016,
                2407.8537437329046,
                252.73488943553605,
            ),
        ];
        for (delta, keep, hits, width, total, sum_sq) in cases {
            let river = River {
                hits,
                width,
                total,
                sum_sq,
            };
            check("real", delta, keep, &xs, river);
        }
    }

    #[test]
    fn a_steady_stream_raises_nothing_as_in_river() {
        // river 0.26.1, drift.ADWIN(): no detection in 20,000 rows at p = 0.2.
        let xs: Vec<f64> = (0..20_000u64)
            .map(|i| f64::from(u8::from(u(i, 777) < 0.2)))
            .collect();
        for keep_window in [false, true] {
            let river = River {
                hits: vec![],
                width: 20_000,
                total: 4001.0,
                sum_sq: 3200.599950000001,
            };
            check("steady", 0.002, keep_window, &xs, river);
        }
    }

    #[test]
    fn estimation_and_variance_are_those_of_the_last_width_values() {
        let xs = real();
        for keep_window in [false, true] {
            let mut a = Adwin {
                keep_window,
                ..Adwin::default()
            };
            let mut cuts = 0;
            for (i, &x) in xs.iter().enumerate() {
                a.update(x);
                cuts += usize::from(a.drift_detected());
                let w = a.width() as usize;
                let window = &xs[i + 1 - w..=i];
                let mean = window.iter().sum::<f64>() / w as f64;
                let var = window.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / w as f64;
                assert!((a.estimation() - mean).abs() < 1e-9, "row {i}");
                assert!((a.variance() - var).abs() < 1e-9, "row {i}");
                assert!((a.total() - mean * w as f64).abs() < 1e-9, "row {i}");
            }
            assert!(cuts > 0, "the stream must shrink the window");
        }
    }

    #[test]
    fn rows_since_cut_counts_from_the_start_of_the_kept_window() {
        let mut a = Adwin::default();
        assert_eq!(a.rows_since_cut(), 0);
        let xs = rates(0.1, 0.35);
        for (i, &x) in xs.iter().enumerate() {
            a.update(x);
            if i < 1599 {
                assert_eq!(a.rows_since_cut(), 0, "row {i}");
            }
        }
        // The cut at row 1599 kept 448 values (rows 1152..=1599); 2,400 rows
        // followed, and River's ADWIN restarted its window with the first.
        assert_eq!(a.rows_since_cut(), 448 + 2400);
        assert_eq!(a.width(), 2400);
    }

    #[test]
    fn degenerate_settings_do_not_panic() {
        let xs = rates(0.1, 0.9);
        for (clock, max_buckets, min_window_length) in [(0, 0, 0), (1, 1, 0), (1, 2, 1)] {
            let mut a = Adwin {
                clock,
                max_buckets,
                min_window_length,
                keep_window: true,
                ..Adwin::default()
            };
            let hits = detections(&mut a, &xs);
            assert!(
                !hits.is_empty(),
                "{clock} {max_buckets} {min_window_length}"
            );
            assert!(a.width() >= 1);
        }
        // Lowering max_buckets mid-stream keeps the rows bounded.
        let mut a = Adwin::default();
        for &x in &xs[..100] {
            a.update(x);
        }
        a.max_buckets = 2;
        for &x in &xs[100..] {
            a.update(x);
        }
        assert!(a.rows.iter().all(|r| r.len() <= 3));
    }
}
