//! A run's trace: what was sent, answered, lost and injected, and who held what, with the
//! virtual time. Kept in full when a seed is replayed (`SIM_SEED`), otherwise only its tail.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Shared, cheap to clone.
#[derive(Clone, Default)]
pub struct Trace(Arc<Mutex<Lines>>);

#[derive(Default)]
struct Lines {
    lines: VecDeque<(Duration, String)>,
    /// 0 keeps everything.
    keep: usize,
}

impl Trace {
    /// A trace that keeps the last `keep` lines (0: all of them).
    pub fn keeping(keep: usize) -> Self {
        Self(Arc::new(Mutex::new(Lines {
            lines: VecDeque::new(),
            keep,
        })))
    }

    /// Adds a line at virtual time `at`.
    pub fn push(&self, at: Duration, line: String) {
        let mut l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if l.keep > 0 && l.lines.len() == l.keep {
            l.lines.pop_front();
        }
        l.lines.push_back((at, line));
    }

    /// The lines, one per row, with their time in milliseconds.
    pub fn render(&self) -> String {
        let l = self.0.lock().unwrap_or_else(|e| e.into_inner());
        l.lines
            .iter()
            .map(|(at, line)| format!("{:>10.3} ms  {line}\n", at.as_secs_f64() * 1e3))
            .collect()
    }
}
