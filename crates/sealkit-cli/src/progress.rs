//! Progress lines for long jobs: done/total, rate and time left, drawn on a terminal only.

use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

/// Measures a job's rate from the first report on (a resumed job's earlier work does not count
/// towards its rate) and formats the line.
#[derive(Debug)]
pub(crate) struct Rate {
    started: Instant,
    first: Option<(u64, u64)>,
}

impl Rate {
    pub(crate) fn new() -> Self {
        Self {
            started: Instant::now(),
            first: None,
        }
    }

    /// `done` of `total` units, `count` things of `what` processed so far (all runs).
    pub(crate) fn line(
        &mut self,
        done: u64,
        total: u64,
        unit: &str,
        count: u64,
        what: &str,
    ) -> String {
        self.line_at(self.started.elapsed(), done, total, unit, count, what)
    }

    fn line_at(
        &mut self,
        elapsed: Duration,
        done: u64,
        total: u64,
        unit: &str,
        count: u64,
        what: &str,
    ) -> String {
        let (done_at_start, count_at_start) = *self.first.get_or_insert((done, count));
        let secs = elapsed.as_secs_f64();
        let percent = if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        };
        let mut line = format!("{unit} {done}/{total} ({percent:.0}%), {count} {what}");
        if secs >= 0.5 {
            let rate = count.saturating_sub(count_at_start) as f64 / secs;
            line.push_str(&format!(", {rate:.0} {what}/s"));
            let units_per_sec = done.saturating_sub(done_at_start) as f64 / secs;
            if done >= total {
                line.push_str(", finishing");
            } else if units_per_sec > 0.0 {
                let left = (total - done) as f64 / units_per_sec;
                line.push_str(&format!(", ETA {}", duration_text(left)));
            } else {
                line.push_str(", ETA unknown");
            }
        }
        line
    }
}

fn duration_text(secs: f64) -> String {
    let secs = secs.round() as u64;
    match secs {
        0..60 => format!("{secs} s"),
        60..3600 => format!("{} min {} s", secs / 60, secs % 60),
        _ => format!("{} h {} min", secs / 3600, secs % 3600 / 60),
    }
}

/// A spinner with a message line on stderr, hidden when stderr is not a terminal or with
/// `--json`.
pub(crate) fn bar(json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(None, ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template("{spinner} {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_spinner()),
    );
    bar.enable_steady_tick(Duration::from_millis(200));
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_gives_done_total_rate_and_time_left_from_this_run_only() {
        let mut rate = Rate::new();
        // A resumed job: 10 of 40 chunks and 1,000 values done before this run.
        let first = rate.line_at(Duration::ZERO, 10, 40, "chunks", 1_000, "values");
        assert_eq!(first, "chunks 10/40 (25%), 1000 values");
        // 10 s later: 10 more chunks, 5,000 more values.
        let later = rate.line_at(Duration::from_secs(10), 20, 40, "chunks", 6_000, "values");
        assert_eq!(
            later,
            "chunks 20/40 (50%), 6000 values, 500 values/s, ETA 20 s"
        );
        let stalled = Rate::new().line_at(Duration::from_secs(5), 0, 3, "rows", 0, "values");
        assert!(stalled.ends_with("ETA unknown"), "{stalled}");
        let long = rate.line_at(
            Duration::from_secs(10),
            11,
            40_000,
            "chunks",
            1_100,
            "values",
        );
        assert!(long.ends_with("ETA 111 h 4 min"), "{long}");
    }
}
