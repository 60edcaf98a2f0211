//! The shapes the report's charts draw: a time axis cut into buckets with series over
//! it, and histograms with a capped number of bins. They are computed here, once, so
//! that the page's script only draws, and so that a run of 10,000 chunks gives the
//! page a few hundred numbers, not 10,000 points.

use serde::Serialize;

/// Most buckets a time axis is cut into: enough to see a worker slow down, few enough
/// that a bar stays wider than a pixel on a page's width.
pub const TIME_BUCKETS: i64 = 60;

/// Most bins of a histogram.
pub const MAX_BINS: usize = 40;

/// Fewest bins a histogram aims at.
pub const MIN_BINS: usize = 5;

/// A run's time cut into buckets of one width, from the first chunk claimed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct TimeAxis {
    /// Where the first bucket starts (epoch milliseconds, the clock of the process that
    /// claimed the first chunk).
    pub start_ms: i64,
    /// Each bucket's width in milliseconds: a round value (1, 2 or 5 × a power of ten
    /// milliseconds, or a round number of seconds, minutes, hours or days).
    pub bucket_ms: i64,
    /// How many buckets cover the run, at most [`TIME_BUCKETS`].
    pub buckets: usize,
}

impl TimeAxis {
    /// The axis from `start_ms` to `end_ms`, in at most [`TIME_BUCKETS`] buckets.
    pub fn new(start_ms: i64, end_ms: i64) -> TimeAxis {
        let span = (end_ms - start_ms).max(1);
        let bucket_ms = round_ms((span + TIME_BUCKETS - 1) / TIME_BUCKETS);
        let buckets = ((span + bucket_ms - 1) / bucket_ms).max(1) as usize;
        TimeAxis {
            start_ms,
            bucket_ms,
            buckets,
        }
    }

    /// The bucket holding the time `ms`; times outside the axis go to its ends.
    pub fn index(&self, ms: i64) -> usize {
        let i = (ms - self.start_ms).div_euclid(self.bucket_ms);
        i.clamp(0, self.buckets as i64 - 1) as usize
    }

    /// Adds `amount` to `values` (one per bucket), spread evenly over the time from
    /// `from_ms` to `to_ms`: a chunk's rows over the time it took. An instant puts all
    /// of it into its bucket.
    pub fn spread(&self, values: &mut [f64], from_ms: i64, to_ms: i64, amount: f64) {
        if to_ms <= from_ms {
            values[self.index(from_ms)] += amount;
            return;
        }
        let whole = (to_ms - from_ms) as f64;
        let (first, last) = (self.index(from_ms), self.index(to_ms));
        for (i, value) in values.iter_mut().enumerate().take(last + 1).skip(first) {
            let lo = self.start_ms + i as i64 * self.bucket_ms;
            let hi = lo + self.bucket_ms;
            // The first and last buckets also take what lies beyond the axis.
            let lo = if i == 0 { i64::MIN } else { lo };
            let hi = if i + 1 == self.buckets { i64::MAX } else { hi };
            let overlap = to_ms.min(hi) - from_ms.max(lo);
            if overlap > 0 {
                *value += amount * overlap as f64 / whole;
            }
        }
    }
}

/// The smallest round width of at least `ms` milliseconds.
fn round_ms(ms: i64) -> i64 {
    const SECOND: i64 = 1000;
    const MINUTE: i64 = 60 * SECOND;
    const HOUR: i64 = 60 * MINUTE;
    const DAY: i64 = 24 * HOUR;
    const STEPS: &[i64] = &[
        1,
        2,
        5,
        10,
        20,
        50,
        100,
        200,
        500,
        SECOND,
        2 * SECOND,
        5 * SECOND,
        10 * SECOND,
        15 * SECOND,
        30 * SECOND,
        MINUTE,
        2 * MINUTE,
        5 * MINUTE,
        10 * MINUTE,
        15 * MINUTE,
        30 * MINUTE,
        HOUR,
        2 * HOUR,
        3 * HOUR,
        6 * HOUR,
        12 * HOUR,
        DAY,
    ];
    match STEPS.iter().find(|&&s| s >= ms) {
        Some(&s) => s,
        None => DAY * round_up(ms as f64 / DAY as f64) as i64,
    }
}

/// The smallest of 1, 2 or 5 × a power of ten that is at least `x` (> 0).
fn round_up(x: f64) -> f64 {
    let power = 10f64.powi(x.log10().floor() as i32);
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * power)
        // A product can land a hair below `x` (0.3 / 0.1): compare with a tolerance.
        .find(|v| *v >= x * (1.0 - 1e-9))
        .unwrap_or(10.0 * power)
}

/// Named values over a [`TimeAxis`], one per bucket.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Series {
    /// What the values are of: a worker, a reason.
    pub name: String,
    /// One value per bucket.
    pub values: Vec<f64>,
}

/// How many values fall into each of equal bins from zero.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Histogram {
    /// Each bin's width (1, 2 or 5 × a power of ten): bin `i` holds the values from
    /// `i × width` up to, not including, `(i + 1) × width`; the last also holds its
    /// upper edge.
    pub width: f64,
    /// The count of each bin, at most [`MAX_BINS`] of them; none without values.
    pub counts: Vec<u64>,
}

impl Histogram {
    /// The histogram of `values` (none negative): about √n bins, at least
    /// [`MIN_BINS`] (so that one chunk is a bar, not the whole plot) and at most
    /// [`MAX_BINS`].
    pub fn of(values: &[f64]) -> Histogram {
        let max = values.iter().copied().fold(0.0, f64::max);
        if values.is_empty() {
            return Histogram {
                width: 0.0,
                counts: Vec::new(),
            };
        }
        let wanted = ((values.len() as f64).sqrt().ceil() as usize).clamp(MIN_BINS, MAX_BINS);
        // A microsecond is the finest width worth drawing.
        let width = round_up((max / wanted as f64).max(1e-6));
        // With a tolerance: 0.0005 / 0.0001 may come out a hair above or below 5.
        let bins = ((max / width - 1e-9).ceil() as usize).clamp(1, MAX_BINS);
        let mut counts = vec![0u64; bins];
        for v in values {
            counts[((v / width + 1e-9).floor() as usize).min(bins - 1)] += 1;
        }
        Histogram { width, counts }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_time_axis_has_round_buckets_and_at_most_sixty() {
        let a = TimeAxis::new(1_000, 1_000 + 90_000);
        assert_eq!((a.bucket_ms, a.buckets), (2_000, 45));
        let a = TimeAxis::new(0, 3 * 3_600_000 + 1);
        assert_eq!((a.bucket_ms, a.buckets), (300_000, 37));
        let a = TimeAxis::new(5, 5);
        assert_eq!((a.bucket_ms, a.buckets), (1, 1));
        let a = TimeAxis::new(0, 200);
        assert_eq!((a.bucket_ms, a.buckets), (5, 40));
        for span in [1, 59, 61, 999, 7_777, 86_400_000, 400 * 86_400_000] {
            let a = TimeAxis::new(0, span);
            assert!(
                a.buckets <= 60 && a.buckets as i64 * a.bucket_ms >= span,
                "{a:?}"
            );
        }
    }

    #[test]
    fn spread_puts_a_chunks_rows_into_the_buckets_it_overlaps() {
        let a = TimeAxis::new(0, 10_000);
        assert_eq!(a.bucket_ms, 200);
        let mut v = vec![0.0; a.buckets];
        // 300 rows over 100..400 ms: a third in bucket 0 (100..200), two thirds in 1.
        a.spread(&mut v, 100, 400, 300.0);
        assert_eq!((v[0], v[1], v[2]), (100.0, 200.0, 0.0));
        // An instant goes whole into its bucket; the end of the axis into the last.
        a.spread(&mut v, 10_000, 10_000, 7.0);
        assert_eq!(v[49], 7.0);
        assert_eq!(v.iter().sum::<f64>(), 307.0);
    }

    #[test]
    fn a_histogram_has_round_bins_capped_at_forty() {
        let h = Histogram::of(&[0.1, 0.25, 0.3, 1.0]);
        assert_eq!(h.width, 0.2);
        assert_eq!(h.counts, vec![1, 2, 0, 0, 1]);
        // Read-backs of a fraction of a millisecond still spread over bins.
        let h = Histogram::of(&[0.0002, 0.0003, 0.0005]);
        assert_eq!(h.width, 0.0001);
        assert_eq!(h.counts, vec![0, 0, 1, 1, 1]);
        let many: Vec<f64> = (0..10_000).map(|i| i as f64 / 100.0).collect();
        let h = Histogram::of(&many);
        assert!(h.counts.len() <= MAX_BINS, "{}", h.counts.len());
        assert_eq!(h.counts.iter().sum::<u64>(), 10_000);
        assert_eq!(Histogram::of(&[]).counts, Vec::<u64>::new());
        let zeros = Histogram::of(&[0.0, 0.0]);
        assert_eq!(zeros.counts, vec![2]);
    }
}
