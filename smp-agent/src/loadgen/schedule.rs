//! The open-loop schedule: when each request *should* be sent, independent of responses.
//!
//! Request `g` (a global sequence number over all connections) is intended for
//! `start + g / rate`. Connection `c` of `C` owns the requests `c, c + C, c + 2C, …`, so the
//! connections interleave evenly and together send exactly `rate` requests per second.
//!
//! Coordinated omission: latency is measured from the intended send time, so when a
//! connection is still busy (the server stalled), every request that should have gone out in
//! the meantime is charged the time it waited, exactly as wrk2 does. [`Pacer::wait`] applies
//! one narrow exception, documented there: the wake-up jitter of the tool's own timer.

use std::time::Duration;

use tokio::time::Instant;

/// How long a sleeping connection may wake late before the lateness is charged to the
/// request: tokio timers have 1 ms granularity and round deadlines up.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);

/// A fixed-rate schedule shared by all connections.
#[derive(Debug, Clone, Copy)]
pub struct Schedule {
    start: Instant,
    /// Nanoseconds between two consecutive requests (over all connections), as f64 so rates
    /// that do not divide a second stay exact over long runs.
    interval_ns: f64,
    /// Intended times at or after this are not sent.
    end: Instant,
}

impl Schedule {
    /// A schedule of `rate` requests per second from `start` until `end` (exclusive).
    ///
    /// `rate` must be finite and > 0 (checked by [`super::Rate::parse`]).
    pub fn new(start: Instant, rate: f64, end: Instant) -> Self {
        Self {
            start,
            interval_ns: 1e9 / rate,
            end,
        }
    }

    /// The intended send time of global request `g`, or `None` if it falls at or after the end.
    pub fn intended(&self, g: u64) -> Option<Instant> {
        let offset = Duration::from_nanos((g as f64 * self.interval_ns).round() as u64);
        let t = self.start + offset;
        (t < self.end).then_some(t)
    }

    /// The number of requests in the whole schedule (the `g` with an intended time).
    pub fn total(&self) -> u64 {
        let span_ns = self.end.saturating_duration_since(self.start).as_nanos() as f64;
        // Start from the float estimate, then settle on the exact boundary of `intended`.
        let mut n = (span_ns / self.interval_ns).floor() as u64;
        while self.intended(n).is_some() {
            n += 1;
        }
        while n > 0 && self.intended(n - 1).is_none() {
            n -= 1;
        }
        n
    }

    /// How many requests of connection `conn` (of `conns`) are intended in `[from_g, end)`,
    /// counting only its own sequence numbers `≥ from_g`. Used to report the requests a run
    /// could not send before it had to stop.
    pub fn remaining(&self, conn: u64, conns: u64, from_k: u64) -> u64 {
        let total = self.total();
        // Requests of this connection: g = k * conns + conn < total.
        let own = if total > conn {
            (total - conn).div_ceil(conns)
        } else {
            0
        };
        own.saturating_sub(from_k)
    }
}

/// One connection's walk through the schedule.
#[derive(Debug)]
pub struct Pacer {
    schedule: Schedule,
    conn: u64,
    conns: u64,
    /// The connection's own sequence number (its `k`-th request).
    k: u64,
}

/// What [`Pacer::wait`] decided for the next request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slot {
    /// Global sequence number (selects the target URL round-robin).
    pub seq: u64,
    /// The intended send time.
    pub intended: Instant,
    /// Where the request's latency clock starts (see [`Pacer::wait`]).
    pub clock_start: Instant,
}

impl Pacer {
    /// Connection `conn` of `conns` walking `schedule`.
    pub fn new(schedule: Schedule, conn: u64, conns: u64) -> Self {
        Self {
            schedule,
            conn,
            conns: conns.max(1),
            k: 0,
        }
    }

    /// The next slot without waiting, or `None` when the schedule is done.
    pub fn peek(&self) -> Option<(u64, Instant)> {
        let seq = self.k * self.conns + self.conn;
        self.schedule.intended(seq).map(|t| (seq, t))
    }

    /// Requests of this connection still unsent (call when giving up early).
    pub fn remaining(&self) -> u64 {
        self.schedule.remaining(self.conn, self.conns, self.k)
    }

    /// Waits until the next request is due and returns its slot, or `None` when the schedule
    /// is done. Cancel-safe.
    ///
    /// The latency clock starts at the intended time, with one exception: if the connection
    /// was idle and sleeping until that time, the clock starts when the timer actually fired,
    /// but never later than `intended + TIMER_SLACK`. The late wake-up of an idle connection is
    /// the tool's own timer jitter (0–1 ms with tokio), not a delay caused by the system under
    /// test; charging it would add up to a millisecond to every sub-millisecond request a
    /// mesh measurement cares about. A connection that was still busy when its next request
    /// became due (a slow or stalled server) is charged from the intended time in full: that
    /// is the coordinated-omission correction. A wake-up later than the slack (an overloaded
    /// generator) is charged beyond the slack, so the tool cannot hide its own overload.
    pub async fn wait(&mut self) -> Option<Slot> {
        let (seq, intended) = self.peek()?;
        let now = Instant::now();
        let clock_start = if now >= intended {
            // Behind schedule: the request waited for this connection. Charge all of it.
            intended
        } else {
            tokio::time::sleep_until(intended).await;
            Instant::now().min(intended + TIMER_SLACK)
        };
        // Advanced only after the sleep, so dropping this future (cancel-safe) loses no slot.
        self.k += 1;
        Some(Slot {
            seq,
            intended,
            clock_start,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sched(rate: f64, secs: u64) -> (Instant, Schedule) {
        let start = Instant::now();
        (
            start,
            Schedule::new(start, rate, start + Duration::from_secs(secs)),
        )
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn total_count_is_rate_times_duration() {
        let (_, s) = sched(1000.0, 3);
        let conns = 7;
        let mut total = 0;
        for c in 0..conns {
            let mut p = Pacer::new(s, c, conns);
            assert_eq!(p.remaining(), s.remaining(c, conns, 0));
            let mut n = 0;
            while p.wait().await.is_some() {
                n += 1;
            }
            assert_eq!(n, s.remaining(c, conns, 0), "conn {c}");
            total += n;
        }
        assert_eq!(total, 3000);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn non_integer_rate_does_not_drift() {
        let (start, s) = sched(3.0, 10);
        let mut p = Pacer::new(s, 0, 1);
        let mut last = None;
        let mut n = 0;
        while let Some(slot) = p.wait().await {
            n += 1;
            last = Some(slot.intended);
        }
        assert_eq!(n, 30);
        assert_eq!(s.total(), 30);
        // The 30th request (g = 29) is due at 29/3 s.
        let expect = start + Duration::from_nanos(9_666_666_667);
        assert_eq!(last, Some(expect));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn connections_interleave() {
        let (start, s) = sched(100.0, 1);
        let mut a = Pacer::new(s, 0, 2);
        let b = Pacer::new(s, 1, 2);
        assert_eq!(a.peek(), Some((0, start)));
        assert_eq!(b.peek(), Some((1, start + Duration::from_millis(10))));
        a.wait().await;
        assert_eq!(a.peek(), Some((2, start + Duration::from_millis(20))));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn idle_connection_clock_starts_at_intended_time() {
        let (start, s) = sched(10.0, 1);
        let mut p = Pacer::new(s, 0, 1);
        p.wait().await.unwrap();
        let slot = p.wait().await.unwrap();
        assert_eq!(slot.intended, start + Duration::from_millis(100));
        // Paused clock: the timer fires exactly on time (a ms tick), so no lateness is hidden.
        assert!(slot.clock_start >= slot.intended);
        assert!(slot.clock_start <= slot.intended + TIMER_SLACK);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn busy_connection_is_charged_from_intended_time() {
        // 1000 rps on one connection; the server stalls 500 ms on the first request.
        let (start, s) = sched(1000.0, 2);
        let mut p = Pacer::new(s, 0, 1);
        let first = p.wait().await.unwrap();
        assert_eq!(first.clock_start, start);
        tokio::time::advance(Duration::from_millis(500)).await;
        // Every request due during the stall is sent at once, each charged from its own
        // intended time: 499 ms, 498 ms, … the full effect of the stall, not one slow sample.
        let now = Instant::now();
        let mut charged = Vec::new();
        for _ in 0..499 {
            let slot = p.wait().await.unwrap();
            assert_eq!(Instant::now(), now, "no sleeping while behind schedule");
            assert_eq!(slot.clock_start, slot.intended);
            charged.push(now - slot.clock_start);
        }
        assert_eq!(charged[0], Duration::from_millis(499));
        assert_eq!(charged[498], Duration::from_millis(1));
        // Caught up: the next one sleeps until its slot.
        let slot = p.wait().await.unwrap();
        assert_eq!(slot.intended, start + Duration::from_millis(500));
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn remaining_counts_unsent_requests() {
        let (_, s) = sched(100.0, 1);
        let mut p = Pacer::new(s, 1, 4);
        assert_eq!(p.remaining(), 25);
        for _ in 0..10 {
            p.wait().await.unwrap();
        }
        assert_eq!(p.remaining(), 15);
    }
}
