//! Stream detectors for concept drift: they read the model's error stream (1 for a
//! wrong answer, 0 for a right one, as labels come back) and say when its level
//! has changed, which input tests cannot see when P(x) stays and P(y|x) moves.
//!
//! - [`Ddm`] (Gama et al., 2004): tracks the error rate `p` and its standard error
//!   `s = √(p(1−p)/n)`; after a warm start it remembers the minimum of `p + s` and
//!   warns at `p + s > p_min + 2·s_min`, detects at `p + s > p_min + 3·s_min`.
//!   Defaults: warm start 30, thresholds 2 and 3. `min_errors` (0 in River, and
//!   by default here) also holds the minimum back until that many errors have
//!   been seen: with none yet, `s = 0` and the first error is "drift". The
//!   normal approximation behind the 3σ rule wants `n·p ≥ 5`, and the daemon's
//!   concept watch asks for 5.
//! - [`PageHinkley`] (Page, 1954): cumulative deviations from the running mean,
//!   with a tolerance `delta` and a forgetting factor `alpha`; detects when the
//!   deviation from the cumulative minimum (or maximum) passes `threshold`.
//!   Defaults: 30 rows minimum, delta 0.005, threshold 50, alpha 0.9999, both
//!   directions.
//!
//! - [`rise_start`]: where a rise in a stream's mean most likely began, from the
//!   values themselves (the split that maximises the two-sample statistic, as
//!   binary segmentation does), for dating what a detector found.
//!
//! Both detectors follow River 0.26's definitions (`river.drift.binary.DDM`,
//! `river.drift.PageHinkley`) and defaults, so that their detections can be
//! compared row for row; a test replays a stream through both and checks the rows
//! River reported. After a detection a detector starts afresh with the next value.

/// Drift Detection Method over a 0/1 error stream.
#[derive(Debug, Clone)]
pub struct Ddm {
    pub warm_start: u64,
    pub warning_threshold: f64,
    pub drift_threshold: f64,
    /// Errors to see before `p_min` is recorded (and so before any detection).
    pub min_errors: u64,
    n: u64,
    errors: u64,
    mean: f64,
    p_min: f64,
    s_min: f64,
    ps_min: f64,
    warning: bool,
    /// The value count at which the current warning began.
    warning_since: Option<u64>,
    drift: bool,
}

impl Default for Ddm {
    fn default() -> Self {
        Self::new(30, 2.0, 3.0)
    }
}

impl Ddm {
    pub fn new(warm_start: u64, warning_threshold: f64, drift_threshold: f64) -> Ddm {
        Ddm {
            warm_start,
            warning_threshold,
            drift_threshold,
            min_errors: 0,
            n: 0,
            errors: 0,
            mean: 0.0,
            p_min: f64::INFINITY,
            s_min: f64::INFINITY,
            ps_min: f64::INFINITY,
            warning: false,
            warning_since: None,
            drift: false,
        }
    }

    fn reset(&mut self) {
        *self = Ddm {
            min_errors: self.min_errors,
            ..Ddm::new(
                self.warm_start,
                self.warning_threshold,
                self.drift_threshold,
            )
        };
    }

    /// Adds one outcome (`true` = the model was wrong).
    pub fn update(&mut self, error: bool) {
        if self.drift {
            self.reset();
        }
        self.n += 1;
        self.errors += u64::from(error);
        self.mean += (f64::from(u8::from(error)) - self.mean) / self.n as f64;
        let p = self.mean;
        let s = (p * (1.0 - p) / self.n as f64).sqrt();
        if self.n > self.warm_start && self.errors >= self.min_errors {
            if p + s <= self.ps_min {
                self.p_min = p;
                self.s_min = s;
                self.ps_min = p + s;
            }
            self.warning = p + s > self.p_min + self.warning_threshold * self.s_min;
            if p + s > self.p_min + self.drift_threshold * self.s_min {
                self.drift = true;
                self.warning = false;
            }
            self.warning_since = match (self.warning || self.drift, self.warning_since) {
                (true, Some(since)) => Some(since),
                (true, None) => Some(self.n),
                (false, _) => None,
            };
        }
    }

    pub fn drift_detected(&self) -> bool {
        self.drift
    }

    /// The same detector waiting for `n` errors before it records a minimum.
    pub fn with_min_errors(mut self, n: u64) -> Ddm {
        self.min_errors = n;
        self
    }

    pub fn warning_detected(&self) -> bool {
        self.warning
    }

    /// The error rate since the last reset.
    pub fn error_rate(&self) -> f64 {
        self.mean
    }

    /// Where the change began, as a count of values since the last reset (the
    /// first is 1): the start of the warning that led to the detection, or the
    /// latest value when there was none.
    pub fn change_start(&self) -> u64 {
        self.warning_since.unwrap_or(self.n)
    }
}

/// Where a rise in the mean of `values` most likely began: the index `k` of the
/// first value of the higher part that maximises
/// `(mean(values[k..]) − mean(values[..k]))·√(k·(n − k)/n)` (the least-squares
/// single change point, restricted to rises) over splits leaving at least
/// `min_part` values on each side. `None` when no such split has the later part
/// higher. One pass over the values to total them and one to scan the splits.
pub fn rise_start<I>(values: I, min_part: usize) -> Option<usize>
where
    I: IntoIterator<Item = f64>,
    I::IntoIter: ExactSizeIterator + Clone,
{
    let values = values.into_iter();
    let n = values.len();
    let min_part = min_part.max(1);
    if n < 2 * min_part {
        return None;
    }
    let total: f64 = values.clone().sum();
    let mut before = 0.0;
    let mut best: Option<(f64, usize)> = None;
    for (i, v) in values.enumerate().take(n - min_part) {
        before += v;
        let k = i + 1;
        if k < min_part {
            continue;
        }
        let (nb, na) = (k as f64, (n - k) as f64);
        let rise = (total - before) / na - before / nb;
        let score = rise * (nb * na / n as f64).sqrt();
        if rise > 0.0 && best.is_none_or(|(s, _)| score > s) {
            best = Some((score, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Which direction of change Page-Hinkley reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Increases only: on an error stream, only a model getting worse is drift.
    Up,
    Down,
    Both,
}

/// The Page-Hinkley test over a real-valued stream.
#[derive(Debug, Clone)]
pub struct PageHinkley {
    pub min_instances: u64,
    pub delta: f64,
    pub threshold: f64,
    pub alpha: f64,
    /// Which changes count: River's `mode` ("up", "down", "both").
    pub mode: Mode,
    n: u64,
    mean: f64,
    sum_increase: f64,
    sum_decrease: f64,
    min_increase: f64,
    max_decrease: f64,
    /// The value counts at which `min_increase` and `max_decrease` were reached.
    min_at: u64,
    max_at: u64,
    /// Whether the last test saw a rise (else a fall).
    rising: bool,
    drift: bool,
}

impl Default for PageHinkley {
    fn default() -> Self {
        Self::new(30, 0.005, 50.0, 0.9999)
    }
}

impl PageHinkley {
    pub fn new(min_instances: u64, delta: f64, threshold: f64, alpha: f64) -> PageHinkley {
        PageHinkley {
            min_instances,
            delta,
            threshold,
            alpha,
            mode: Mode::Both,
            n: 0,
            mean: 0.0,
            sum_increase: 0.0,
            sum_decrease: 0.0,
            min_increase: f64::INFINITY,
            // River starts the maximum at −1, not −∞; kept for identical results.
            max_decrease: -1.0,
            min_at: 0,
            max_at: 0,
            rising: false,
            drift: false,
        }
    }

    /// Adds one value.
    pub fn update(&mut self, x: f64) {
        if self.drift {
            *self = PageHinkley::new(self.min_instances, self.delta, self.threshold, self.alpha)
                .with_mode(self.mode);
        }
        self.n += 1;
        self.mean += (x - self.mean) / self.n as f64;
        let dev = x - self.mean;
        self.sum_increase = self.alpha * self.sum_increase + dev - self.delta;
        self.sum_decrease = self.alpha * self.sum_decrease + dev + self.delta;
        if self.sum_increase < self.min_increase {
            self.min_increase = self.sum_increase;
            self.min_at = self.n;
        }
        if self.sum_decrease > self.max_decrease {
            self.max_decrease = self.sum_decrease;
            self.max_at = self.n;
        }
        if self.n >= self.min_instances {
            let up = self.sum_increase - self.min_increase > self.threshold;
            let down = self.max_decrease - self.sum_decrease > self.threshold;
            self.rising = up;
            self.drift = match self.mode {
                Mode::Up => up,
                Mode::Down => down,
                Mode::Both => up || down,
            };
        }
    }

    pub fn drift_detected(&self) -> bool {
        self.drift
    }

    /// Where the change began, as a count of values since the last reset: the
    /// value after the extreme of the cumulative deviation that the detection
    /// measured from (the minimum for a rise, the maximum for a fall).
    pub fn change_start(&self) -> u64 {
        if self.rising {
            self.min_at + 1
        } else {
            self.max_at + 1
        }
        .min(self.n)
    }

    /// The same detector reporting only changes in `mode`'s direction.
    pub fn with_mode(mut self, mode: Mode) -> PageHinkley {
        self.mode = mode;
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 4,000 outcomes: error rate 0.1 for rows 0..1500, 0.35 after, from a hash
    /// both this test and the Python script that produced River's numbers compute
    /// identically: `u = ((i·2654435761 + 12345) mod 2³²) / 2³²`, error when `u < p`.
    fn stream() -> Vec<bool> {
        rates(0.1, 0.35)
    }

    /// Error rate `before` for 1500 rows, then `after` (4000 rows in all).
    fn rates(before: f64, after: f64) -> Vec<bool> {
        (0..4000u64)
            .map(|i| {
                let u = ((i * 2_654_435_761 + 12_345) % 4_294_967_296) as f64 / 4_294_967_296.0;
                u < if i < 1500 { before } else { after }
            })
            .collect()
    }

    /// The rows at which `ph` reports drift on `errors`.
    fn detections(ph: &mut PageHinkley, errors: Vec<bool>) -> Vec<usize> {
        errors
            .into_iter()
            .enumerate()
            .filter_map(|(i, e)| {
                ph.update(f64::from(u8::from(e)));
                ph.drift_detected().then_some(i)
            })
            .collect()
    }

    #[test]
    fn page_hinkley_modes_match_river() {
        // river 0.26.1, drift.PageHinkley(mode=...) on the rising stream (0.1 → 0.35)
        // and the falling one (0.35 → 0.1).
        let cases = [
            (Mode::Up, false, vec![1717]),
            (Mode::Up, true, vec![]),
            (Mode::Both, true, vec![1724]),
            (Mode::Down, false, vec![]),
            (Mode::Down, true, vec![1724]),
        ];
        for (mode, falling, want) in cases {
            let mut ph = PageHinkley::default().with_mode(mode);
            let s = if falling {
                rates(0.35, 0.1)
            } else {
                rates(0.1, 0.35)
            };
            assert_eq!(detections(&mut ph, s), want, "{mode:?}, falling {falling}");
        }
    }

    #[test]
    fn ddm_detects_where_river_does() {
        // river 0.26.1, drift.binary.DDM(): drift at [1594]; 47 warning rows,
        // the first at 1547.
        let mut d = Ddm::default();
        let mut drifts = Vec::new();
        let mut warnings = Vec::new();
        let mut starts = Vec::new();
        for (i, e) in stream().into_iter().enumerate() {
            d.update(e);
            if d.drift_detected() {
                drifts.push(i);
                starts.push(d.change_start());
            }
            if d.warning_detected() {
                warnings.push(i);
            }
        }
        assert_eq!(drifts, vec![1594]);
        assert_eq!(warnings.len(), 47);
        assert_eq!(warnings[0], 1547);
        // The change began with the warning that led to the drift: row 1547 is
        // the 1548th value.
        assert_eq!(starts, vec![1548]);
    }

    #[test]
    fn page_hinkley_dates_the_change_near_where_it_happened() {
        // The error rate rises at row 1500 (the 1501st value); the cumulative
        // deviation's minimum falls near it (on this stream at 1446, a run of
        // right answers just before the change), and the test measures from it.
        let mut ph = PageHinkley::default().with_mode(Mode::Up);
        let mut start = None;
        for e in stream() {
            ph.update(f64::from(u8::from(e)));
            if ph.drift_detected() {
                start = Some(ph.change_start());
                break;
            }
        }
        let start = start.unwrap_or(0);
        assert!((1400..=1560).contains(&start), "change dated at {start}");
    }

    #[test]
    fn page_hinkley_detects_where_river_does() {
        // river 0.26.1, drift.PageHinkley(): drift at [1717];
        // PageHinkley(threshold=5.0): drift at [1518].
        for (threshold, want) in [(50.0, vec![1717]), (5.0, vec![1518])] {
            let mut ph = PageHinkley {
                threshold,
                ..PageHinkley::default()
            };
            assert_eq!(detections(&mut ph, stream()), want, "threshold {threshold}");
        }
    }

    #[test]
    fn min_errors_keeps_a_near_perfect_start_from_alarming_on_its_first_error() {
        // 200 right answers, then one error in 50: River's DDM (min_errors 0)
        // calls the first error drift; with 5 it waits for a real estimate.
        let errors: Vec<bool> = (0..2000).map(|i| i >= 200 && i % 50 == 0).collect();
        let first = |mut d: Ddm| {
            errors.iter().position(|e| {
                d.update(*e);
                d.drift_detected()
            })
        };
        assert_eq!(first(Ddm::default()), Some(200));
        assert_eq!(first(Ddm::default().with_min_errors(5)), None);
    }

    #[test]
    fn a_steady_stream_raises_nothing() {
        let mut d = Ddm::default();
        let mut ph = PageHinkley::default();
        for i in 0..20_000u64 {
            let u = ((i * 2_654_435_761 + 777) % 4_294_967_296) as f64 / 4_294_967_296.0;
            let e = u < 0.2;
            d.update(e);
            ph.update(f64::from(u8::from(e)));
            assert!(!ph.drift_detected(), "Page-Hinkley at {i}");
        }
        assert!((d.error_rate() - 0.2).abs() < 0.01);
    }

    /// `u` in [0, 1) from a multiplicative hash of `i` (no RNG crate needed).
    fn uniform(i: u64, salt: u64) -> f64 {
        ((i * 2_654_435_761 + salt) % 4_294_967_296) as f64 / 4_294_967_296.0
    }

    #[test]
    fn rise_start_finds_a_step_and_ignores_falls() {
        let step: Vec<f64> = (0..100).map(|i| if i < 60 { 1.0 } else { 3.0 }).collect();
        assert_eq!(rise_start(step.iter().copied(), 5), Some(60));
        // The higher part must keep min_part values: a step 3 from the end is
        // placed at the latest allowed split.
        let late: Vec<f64> = (0..100).map(|i| if i < 97 { 1.0 } else { 3.0 }).collect();
        assert_eq!(rise_start(late.iter().copied(), 10), Some(90));
        let fall: Vec<f64> = step.iter().map(|v| -v).collect();
        assert_eq!(rise_start(fall.iter().copied(), 5), None);
        assert_eq!(rise_start(step[..9].iter().copied(), 5), None);
    }

    #[test]
    fn rise_start_dates_a_noisy_rise_where_page_hinkleys_minimum_does_not() {
        // Absolute errors with a long, noisy level creeping from 0.45 to 0.5
        // (the live model ageing slowly), then a step to 1.0 at 3000.
        let errors: Vec<f64> = (0..3400u64)
            .map(|i| {
                let level = if i < 3000 {
                    0.45 + 0.05 * i as f64 / 3000.0
                } else {
                    1.0
                };
                level * 2.0 * (uniform(i, 12_345) + uniform(i, 999) + uniform(i, 7)) / 3.0
            })
            .collect();
        let mut ph = PageHinkley::default().with_mode(Mode::Up);
        let at = errors.iter().position(|e| {
            ph.update(*e);
            ph.drift_detected()
        });
        let at = at.expect("a detection");
        assert!((3000..3300).contains(&at), "detected at {at}");
        // Its own minimum sits at the start of the slow rise, near the first
        // value; the least-squares split finds the step.
        assert!(ph.change_start() < 1000, "{}", ph.change_start());
        let seen = &errors[..=at];
        let k = rise_start(seen.iter().copied(), 10).expect("a rise");
        assert!((2950..=3050).contains(&k), "rise dated at {k}");
    }
}
