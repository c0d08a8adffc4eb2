//! Socket inode → endpoints, from a process's own network namespace (`/proc/<pid>/net/tcp*`).

use std::{collections::HashMap, net::SocketAddr};

use serde::Serialize;

use crate::aggregate::hops::canonical_addr;

/// What is known about one socket inode.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SocketEndpoints {
    /// `tcp`, `tcp6`, `udp`, `unix` or `other`.
    pub proto: &'static str,
    pub local: Option<SocketAddr>,
    pub remote: Option<SocketAddr>,
}

/// Resolves socket inodes of `pid` to their endpoints. Unknown inodes are absent (sockets that
/// closed meanwhile, or kinds not listed).
pub fn endpoints(pid: u32) -> HashMap<u64, SocketEndpoints> {
    let mut out = HashMap::new();
    let Ok(proc) = procfs::process::Process::new(pid as i32) else {
        return out;
    };
    for (proto, entries) in [("tcp", proc.tcp()), ("tcp6", proc.tcp6())] {
        for e in entries.into_iter().flatten() {
            out.insert(
                e.inode,
                SocketEndpoints {
                    proto,
                    local: Some(canonical_addr(e.local_address)),
                    remote: Some(canonical_addr(e.remote_address)),
                },
            );
        }
    }
    for e in proc.udp().into_iter().flatten() {
        out.insert(
            e.inode,
            SocketEndpoints {
                proto: "udp",
                local: Some(canonical_addr(e.local_address)),
                remote: Some(canonical_addr(e.remote_address)),
            },
        );
    }
    for e in proc.unix().into_iter().flatten() {
        out.entry(e.inode).or_insert(SocketEndpoints {
            proto: "unix",
            local: None,
            remote: None,
        });
    }
    out
}
