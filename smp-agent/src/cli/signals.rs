//! The signals that stop a command which runs until told to: SIGTERM (`kill`, systemd, the
//! kubelet, a CI job's timeout) and SIGINT (Ctrl-C). Once [`StopSignals::new`] has run, neither
//! kills the process any more: the command decides what to finish first (write what was
//! measured, take a lab down).

use anyhow::Context as _;
use tokio::signal::unix::{signal, Signal, SignalKind};

/// A stop signal that arrived.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StopSignal {
    /// SIGINT (Ctrl-C).
    Interrupt,
    /// SIGTERM.
    Terminate,
}

impl StopSignal {
    /// `SIGINT` or `SIGTERM`.
    pub fn name(self) -> &'static str {
        match self {
            StopSignal::Interrupt => "SIGINT",
            StopSignal::Terminate => "SIGTERM",
        }
    }

    /// The exit status of a command stopped by it: 128 + the signal number, as a shell
    /// reports a process killed by it (130, 143).
    pub fn exit_status(self) -> u8 {
        match self {
            StopSignal::Interrupt => 128 + libc::SIGINT as u8,
            StopSignal::Terminate => 128 + libc::SIGTERM as u8,
        }
    }
}

/// SIGTERM and SIGINT, caught from the moment this is made (one that arrives before
/// [`Self::recv`] is waited on is kept, not lost).
#[derive(Debug)]
pub struct StopSignals {
    term: Signal,
    int: Signal,
}

impl StopSignals {
    /// Starts catching both.
    pub fn new() -> anyhow::Result<Self> {
        Ok(Self {
            term: signal(SignalKind::terminate()).context("cannot handle SIGTERM")?,
            int: signal(SignalKind::interrupt()).context("cannot handle SIGINT")?,
        })
    }

    /// Waits for either; cancel-safe.
    pub async fn recv(&mut self) -> StopSignal {
        tokio::select! {
            _ = self.term.recv() => StopSignal::Terminate,
            _ = self.int.recv() => StopSignal::Interrupt,
        }
    }
}
