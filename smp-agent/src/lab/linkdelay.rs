//! The lab's slow link (`link_delay_us`): every TCP segment the sidecars exchange across the
//! pods' veth is held in the kernel for a fixed time before it goes on, so the network leg
//! between them grows by a known amount in each direction. This kernel has no `netem`: rules
//! in the client pod hand the segments to a netfilter queue, and the hidden `lab link-delay`
//! process (this module's [`run`]) gives each its verdict (accept) once its time has come, in
//! arrival order. Only the packet metadata reaches it (copy range 0): no payload leaves the
//! kernel. The baseline port's segments are not queued, so the baseline still crosses a fast
//! link (docs/lab.md).

use std::{
    collections::VecDeque,
    net::IpAddr,
    path::Path,
    time::{Duration, Instant},
};

use super::{netns, LabError};

pub mod nfqueue;

/// Netfilter queue the lab's rules use (queues are per network namespace).
pub const QUEUE: u16 = 77;

/// Longest delay the lab accepts: the queue holds every segment of that time.
pub const MAX_DELAY_US: u64 = 1_000_000;

/// Segments the kernel holds for the queue at most; beyond it it drops them (counted:
/// [`QueueStats::queue_dropped`]).
const QUEUE_MAX_LEN: u32 = 16_384;

/// Options of the hidden `lab link-delay` subcommand.
#[derive(Debug, Clone, clap::Args)]
pub struct LinkDelayOptions {
    /// Netfilter queue to serve. Example: --queue 77
    #[arg(long, default_value_t = QUEUE)]
    pub queue: u16,
    /// Time each segment is held, in microseconds. Example: --delay-us 3000
    #[arg(long)]
    pub delay_us: u64,
}

/// Serves the queue until killed: each segment is accepted `delay_us` after it was seen. The
/// process sleeps until the next segment arrives or the oldest one is due, whichever is first,
/// so the segments of one message keep their spacing (a poll every so often would spread them
/// over two polls, and the receiving proxy's hop would hold the gap).
pub fn run(o: LinkDelayOptions) -> Result<(), LabError> {
    let q = o.queue;
    let io = |what: &str| {
        let what = format!("{what} netfilter queue {q}");
        move |e| LabError::io(what, e)
    };
    let sock = nfqueue::Socket::open().map_err(io("open a socket for"))?;
    sock.configure(q, QUEUE_MAX_LEN).map_err(io("bind"))?;
    // Sleeps end when asked, not up to 50 µs later (the default timer slack).
    // SAFETY: PR_SET_TIMERSLACK takes a value and changes only this thread's timer slack.
    unsafe { libc::prctl(libc::PR_SET_TIMERSLACK, 1 as libc::c_ulong) };
    tracing::info!(
        queue = q,
        delay_us = o.delay_us,
        "holding the link's segments"
    );
    let delay = Duration::from_micros(o.delay_us);
    let mut held: VecDeque<(Instant, u32)> = VecDeque::new();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let wait = held
            .front()
            .map(|(due, _)| due.saturating_duration_since(Instant::now()));
        if sock.wait(wait).map_err(io("wait on"))? {
            let seen = Instant::now();
            sock.receive(&mut buf, |id| held.push_back((seen + delay, id)))
                .map_err(io("receive from"))?;
        }
        let now = Instant::now();
        while let Some(&(due, id)) = held.front() {
            if due > now {
                break;
            }
            held.pop_front();
            sock.accept(q, id).map_err(io("give a verdict on"))?;
        }
    }
}

/// The rules (`iptables-restore` input) that send the link's segments to [`QUEUE`], in the
/// client pod: leaving on its veth, and arriving on it, every TCP segment but the baseline
/// port's.
pub fn rules(veth: &str, baseline_port: u16) -> String {
    format!(
        "*mangle\n\
         -A POSTROUTING -o {veth} -p tcp ! --dport {baseline_port} -j NFQUEUE --queue-num {QUEUE}\n\
         -A PREROUTING -i {veth} -p tcp ! --sport {baseline_port} -j NFQUEUE --queue-num {QUEUE}\n\
         COMMIT\n"
    )
}

/// The program that loads [`rules`] for pods of this family.
pub fn restore_program(pod: IpAddr) -> &'static str {
    if pod.is_ipv6() {
        "ip6tables-restore"
    } else {
        "iptables-restore"
    }
}

/// The kernel's figures of one netfilter queue (`/proc/net/netfilter/nfnetlink_queue`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct QueueStats {
    /// Segments held now.
    pub held: u64,
    /// Segments dropped because the queue was full.
    pub queue_dropped: u64,
    /// Segments dropped because they could not be handed to the process.
    pub user_dropped: u64,
}

impl QueueStats {
    /// Segments the link lost.
    pub fn dropped(&self) -> u64 {
        self.queue_dropped + self.user_dropped
    }
}

/// The line of queue `queue` in the text of `/proc/net/netfilter/nfnetlink_queue` (fields:
/// number, peer port id, held, copy mode, copy range, queue dropped, user dropped, id
/// sequence, 1); `None` when no process serves it.
pub fn parse_queue(text: &str, queue: u16) -> Option<QueueStats> {
    text.lines().find_map(|l| {
        let f: Vec<u64> = l
            .split_whitespace()
            .map(|w| w.parse().ok())
            .collect::<Option<_>>()?;
        (f.len() >= 7 && f[0] == u64::from(queue)).then(|| QueueStats {
            held: f[2],
            queue_dropped: f[5],
            user_dropped: f[6],
        })
    })
}

/// Queue [`QUEUE`]'s figures in namespace `ns`; `None` when no process serves it.
pub fn queue_stats(ns: &str) -> Result<Option<QueueStats>, LabError> {
    let text = netns::in_netns(ns, || {
        std::fs::read_to_string("/proc/thread-self/net/netfilter/nfnetlink_queue")
    })?
    .map_err(|e| LabError::io("read /proc/net/netfilter/nfnetlink_queue", e))?;
    Ok(parse_queue(&text, QUEUE))
}

/// Waits until the process `pid` serves [`QUEUE`] in `ns` (before the rules go in: a queued
/// segment that finds nobody is dropped).
pub fn wait_bound(ns: &str, pid: u32, timeout: Duration, log: &Path) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    loop {
        if queue_stats(ns)?.is_some() {
            return Ok(());
        }
        let problem = if !netns::alive(pid) {
            "exited during start-up".to_string()
        } else if Instant::now() >= deadline {
            format!(
                "did not serve netfilter queue {QUEUE} within {} s",
                timeout.as_secs()
            )
        } else {
            std::thread::sleep(Duration::from_millis(10));
            continue;
        };
        return Err(LabError::Startup {
            role: "link-delay".into(),
            kind: "link-delay".into(),
            problem,
            log: log.display().to_string(),
            tail: netns::log_tail(log, 15),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The kernel's table: other queues, a served one, garbage lines skipped.
    #[test]
    fn the_kernels_queue_table_gives_held_and_dropped_segments() {
        let text = "    3  12345     0 2  0     0     0       10  1\n\
                    \x20  77  4242     5 1  0     7     2      901  1\n\
                    not a line\n";
        assert_eq!(
            parse_queue(text, QUEUE),
            Some(QueueStats {
                held: 5,
                queue_dropped: 7,
                user_dropped: 2
            })
        );
        assert_eq!(parse_queue(text, QUEUE).map(|s| s.dropped()), Some(9));
        assert_eq!(parse_queue(text, 4), None);
        assert_eq!(parse_queue("", QUEUE), None);
        assert_eq!(parse_queue("77 1 2", QUEUE), None, "a short line");
    }

    /// Both directions of the veth, TCP only, the baseline port left out of each.
    #[test]
    fn the_rules_queue_both_directions_but_the_baseline() {
        let r = rules("lab-c", 8081);
        assert!(r.starts_with("*mangle\n") && r.ends_with("COMMIT\n"), "{r}");
        assert!(
            r.contains("-A POSTROUTING -o lab-c -p tcp ! --dport 8081 -j NFQUEUE --queue-num 77")
        );
        assert!(
            r.contains("-A PREROUTING -i lab-c -p tcp ! --sport 8081 -j NFQUEUE --queue-num 77")
        );
        assert_eq!(
            restore_program("10.77.0.1".parse().unwrap()),
            "iptables-restore"
        );
        assert_eq!(
            restore_program("fd77::1".parse().unwrap()),
            "ip6tables-restore"
        );
    }
}
