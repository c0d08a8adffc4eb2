//! What waking tasks on idle CPUs costs on this machine: the resolution of `profile`'s
//! self-consistency check.
//!
//! A meshed request's two ends, the client and the app, are woken by the sidecars' writes,
//! often on another CPU than the writer's, while in the baseline they wake each other as each
//! blocks. No socket of a proxy holds that time, so the check cannot tell a difference
//! smaller than it. On a machine whose idle CPUs sleep deeply (a VM whose halted vCPUs the
//! host deschedules) it is tens of microseconds per wake-up; on bare metal a few.

use std::{
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

/// Round trips measured, and the pause before each (long enough for both CPUs to go idle).
pub const ROUNDS: usize = 100;
pub const PAUSE: Duration = Duration::from_millis(2);

/// The median time for one thread to wake another on a second, idle CPU and be woken by its
/// answer (two wake-ups of a task on an idle CPU), over `rounds` round trips each after
/// `pause`. `None` when this process may run on fewer than two CPUs or a thread cannot be
/// placed.
pub fn idle_cpu_round_trip(rounds: usize, pause: Duration) -> Option<Duration> {
    let (a, b) = two_cpus()?;
    let (ping_tx, ping_rx) = mpsc::channel::<()>();
    let (pong_tx, pong_rx) = mpsc::channel::<()>();
    let answerer = thread::Builder::new()
        .name("smp-wake-b".into())
        .spawn(move || {
            if !pin(b) {
                return false;
            }
            while ping_rx.recv().is_ok() {
                if pong_tx.send(()).is_err() {
                    break;
                }
            }
            true
        })
        .ok()?;
    let pinger = thread::Builder::new()
        .name("smp-wake-a".into())
        .spawn(move || {
            if !pin(a) {
                return None;
            }
            let mut rtts = Vec::with_capacity(rounds);
            for _ in 0..rounds {
                thread::sleep(pause);
                let t0 = Instant::now();
                ping_tx.send(()).ok()?;
                pong_rx.recv().ok()?;
                rtts.push(t0.elapsed());
            }
            drop(ping_tx);
            median(rtts)
        })
        .ok()?;
    let rtt = pinger.join().ok().flatten();
    let placed = answerer.join().unwrap_or(false);
    rtt.filter(|_| placed)
}

/// The middle of `v` (the upper one of an even count); `None` when empty.
fn median(mut v: Vec<Duration>) -> Option<Duration> {
    v.sort_unstable();
    v.get(v.len() / 2).copied()
}

/// The first two CPUs this process may run on.
fn two_cpus() -> Option<(usize, usize)> {
    // SAFETY: a zeroed cpu_set_t is a valid empty set; sched_getaffinity fills it.
    let mut set: libc::cpu_set_t = unsafe { std::mem::zeroed() };
    // SAFETY: pid 0 is the calling thread; the size is the set's.
    if unsafe { libc::sched_getaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &mut set) } != 0
    {
        return None;
    }
    // SAFETY: CPU_ISSET reads the set in bounds (i < CPU_SETSIZE).
    let mut cpus = (0..libc::CPU_SETSIZE as usize).filter(|&i| unsafe { libc::CPU_ISSET(i, &set) });
    Some((cpus.next()?, cpus.next()?))
}

/// Places the calling thread on `cpu` alone.
fn pin(cpu: usize) -> bool {
    // SAFETY: as in `two_cpus`; CPU_SET writes in bounds (cpu < CPU_SETSIZE, from the mask).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_round_trips() {
        let ms = |n| Duration::from_millis(n);
        assert_eq!(median(vec![ms(3), ms(1), ms(2)]), Some(ms(2)));
        assert_eq!(median(vec![ms(4), ms(1)]), Some(ms(4)));
        assert_eq!(median(Vec::new()), None);
    }

    #[test]
    fn a_round_trip_between_two_cpus_is_measured_where_there_are_two() {
        let rtt = idle_cpu_round_trip(5, Duration::from_millis(1));
        match two_cpus() {
            Some(_) => {
                let rtt = rtt.expect("two CPUs: measured");
                assert!(
                    rtt > Duration::ZERO && rtt < Duration::from_secs(1),
                    "{rtt:?}"
                );
            }
            None => assert!(rtt.is_none()),
        }
    }
}
