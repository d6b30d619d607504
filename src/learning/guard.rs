//! The online guard: progressive validation of the online copy against the model
//! it started from (the last batch-trained one), on the same recent labels.
//!
//! Each label is scored by both models before the online copy learns from it.
//! Over the last `online.guard_window` labels the guard keeps both metrics
//! (accuracy, or R² with the window's own label variance, the same for both); it
//! trips when the window is full and the online copy's metric is more than
//! `online.guard_margin` below the base model's. A classifier's counts are kept as
//! labels come and go; regression recounts the window (sums of squares kept
//! running in floating point would drift).

use std::collections::VecDeque;

use crate::model::Task;

/// One label as both models saw it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Scored {
    /// Whether each model's class was right.
    Class { online: bool, base: bool },
    /// Each model's squared error and the true value.
    Value { online: f64, base: f64, truth: f64 },
}

/// Both metrics over the window.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Metrics {
    pub online: f64,
    pub base: f64,
    pub rows: usize,
}

/// The sliding window and its verdict.
#[derive(Debug, Clone)]
pub struct Guard {
    window: usize,
    margin: f64,
    rows: VecDeque<Scored>,
    /// Right classes in the window (online, base), kept as labels come and go so
    /// that a classifier's check costs the same at any window size.
    hits: (usize, usize),
}

impl Guard {
    pub fn new(window: usize, margin: f64) -> Guard {
        Guard {
            window: window.max(1),
            margin,
            rows: VecDeque::with_capacity(window.max(1)),
            hits: (0, 0),
        }
    }

    /// Adds one label, dropping the oldest beyond the window.
    pub fn observe(&mut self, s: Scored) {
        if self.rows.len() == self.window {
            if let Some(Scored::Class { online, base }) = self.rows.pop_front() {
                self.hits.0 -= usize::from(online);
                self.hits.1 -= usize::from(base);
            }
        }
        if let Scored::Class { online, base } = s {
            self.hits.0 += usize::from(online);
            self.hits.1 += usize::from(base);
        }
        self.rows.push_back(s);
    }

    /// Forgets every label (a new base model).
    pub fn reset(&mut self) {
        self.rows.clear();
        self.hits = (0, 0);
    }

    /// Both metrics over the window; `None` while it is empty.
    pub fn metrics(&self, task: Task) -> Option<Metrics> {
        let n = self.rows.len();
        if n == 0 {
            return None;
        }
        let (online, base) = match task {
            Task::Classification => (self.hits.0 as f64 / n as f64, self.hits.1 as f64 / n as f64),
            Task::Regression => {
                let values = || {
                    self.rows.iter().filter_map(|s| match s {
                        Scored::Value {
                            online,
                            base,
                            truth,
                        } => Some((*online, *base, *truth)),
                        Scored::Class { .. } => None,
                    })
                };
                let mean = values().map(|v| v.2).sum::<f64>() / n as f64;
                let sst: f64 = values().map(|v| (v.2 - mean).powi(2)).sum();
                let sse_online: f64 = values().map(|v| v.0).sum();
                let sse_base: f64 = values().map(|v| v.1).sum();
                if sst > 0.0 {
                    (1.0 - sse_online / sst, 1.0 - sse_base / sst)
                } else {
                    // Constant labels: compare errors, with R² 0 for a perfect fit.
                    (-sse_online, -sse_base)
                }
            }
        };
        Some(Metrics {
            online,
            base,
            rows: n,
        })
    }

    /// The metrics, when the window is full and the online copy is more than the
    /// margin below the base model.
    pub fn tripped(&self, task: Task) -> Option<Metrics> {
        if self.rows.len() < self.window {
            return None;
        }
        self.metrics(task)
            .filter(|m| m.online < m.base - self.margin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trips_only_on_a_full_window_more_than_the_margin_below() {
        let mut g = Guard::new(10, 0.1);
        // 10 labels: online right on 6, base on 8 → 0.6 < 0.8 − 0.1.
        for i in 0..9 {
            g.observe(Scored::Class {
                online: i < 6,
                base: i < 8,
            });
            assert_eq!(
                g.tripped(Task::Classification),
                None,
                "window not full at {i}"
            );
        }
        g.observe(Scored::Class {
            online: false,
            base: false,
        });
        let m = g.tripped(Task::Classification).unwrap();
        assert_eq!((m.online, m.base, m.rows), (0.6, 0.8, 10));
        // Online 0.75 against base 1.0 is more than 0.1 below; against base 0.75 it is not.
        let mut g = Guard::new(4, 0.1);
        for (online, base) in [(true, true), (true, true), (true, true), (false, true)] {
            g.observe(Scored::Class { online, base });
        }
        assert!(g.tripped(Task::Classification).is_some());
        let mut g = Guard::new(4, 0.1);
        for (online, base) in [(true, true), (true, true), (true, false), (false, true)] {
            g.observe(Scored::Class { online, base });
        }
        assert_eq!(g.tripped(Task::Classification), None);
        g.reset();
        assert_eq!(g.metrics(Task::Classification), None);
    }

    #[test]
    fn the_counts_follow_the_window_as_it_slides() {
        let labels: Vec<(bool, bool)> = (0..23).map(|i| (i % 3 == 0, i % 2 == 0)).collect();
        let mut g = Guard::new(5, 0.0);
        for (i, &(online, base)) in labels.iter().enumerate() {
            g.observe(Scored::Class { online, base });
            let last = &labels[(i + 1).saturating_sub(5)..=i];
            let count = |f: fn(&(bool, bool)) -> bool| last.iter().filter(|l| f(l)).count() as f64;
            let m = g.metrics(Task::Classification).unwrap();
            let n = last.len() as f64;
            assert_eq!(
                (m.online, m.base, m.rows),
                (count(|l| l.0) / n, count(|l| l.1) / n, last.len())
            );
        }
    }

    #[test]
    fn regression_compares_r2_over_the_windows_labels() {
        let mut g = Guard::new(4, 0.05);
        // truth 1, 2, 3, 4: mean 2.5, SST 5. Base exact (R² 1); online off by 1 on
        // every row: SSE 4, R² 0.2.
        for t in [1.0, 2.0, 3.0, 4.0] {
            g.observe(Scored::Value {
                online: 1.0,
                base: 0.0,
                truth: t,
            });
        }
        let m = g.tripped(Task::Regression).unwrap();
        assert!(
            (m.online - 0.2).abs() < 1e-12 && (m.base - 1.0).abs() < 1e-12,
            "{m:?}"
        );
    }
}
