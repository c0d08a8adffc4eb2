//! Which workload of the node an address belongs to, from the node's own processes: every
//! network namespace but the node's own (that of pid 1) is a pod's (or a lab's), its local addresses are in
//! `/proc/<pid>/net/fib_trie` and `/proc/<pid>/net/if_inet6` of any process inside it, and
//! that process's cgroup names the pod (its UID). A namespace with a name under `/run/netns`
//! (`ip netns add`) is named by it too. A node proxy's per-workload rows are keyed by address;
//! this turns them into pods without the API server (which then turns UIDs into names).

use std::{
    collections::HashMap,
    net::{IpAddr, Ipv4Addr, Ipv6Addr},
    os::unix::fs::MetadataExt as _,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// Network namespaces looked at in one scan at most (a node runs a few hundred pods).
const MAX_NAMESPACES: usize = 8192;

/// Who holds an address on this node.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AddressOwner {
    /// UID of the pod whose processes live in the address's network namespace (from their
    /// cgroup), when one of them is in a pod.
    pub pod_uid: Option<String>,
    /// The namespace's name under `/run/netns`, when it has one.
    pub netns_name: Option<String>,
}

/// The local IPv4 addresses in the text of `/proc/<pid>/net/fib_trie`: each leaf address
/// followed by a `/32 host LOCAL` line. Loopback addresses are left out.
pub fn fib_trie_locals(text: &str) -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let mut last: Option<Ipv4Addr> = None;
    for line in text.lines() {
        let t = line.trim_start();
        if let Some(a) = t.strip_prefix("|-- ") {
            last = a.trim().parse().ok();
        } else if t.starts_with("/32 host LOCAL") {
            if let Some(a) = last.filter(|a| !a.is_loopback() && !out.contains(a)) {
                out.push(a);
            }
        }
    }
    out
}

/// The addresses in the text of `/proc/<pid>/net/if_inet6` (32 hex digits, then index,
/// prefix length, scope, flags, device), loopback and link-local ones left out.
pub fn if_inet6_addresses(text: &str) -> Vec<Ipv6Addr> {
    text.lines()
        .filter_map(|l| {
            let hex = l.split_whitespace().next()?;
            (hex.len() == 32)
                .then(|| u128::from_str_radix(hex, 16).ok())
                .flatten()
                .map(Ipv6Addr::from)
        })
        .filter(|a| !a.is_loopback() && (a.segments()[0] & 0xffc0) != 0xfe80)
        .collect()
}

/// The namespace inode in a `/proc/<pid>/ns/net` link (`net:[4026531840]`).
fn ns_inode(link: &Path) -> Option<u64> {
    let target = std::fs::read_link(link).ok()?;
    let s = target.to_str()?;
    s.strip_prefix("net:[")?.strip_suffix(']')?.parse().ok()
}

/// Every address of every network namespace of the node but the node's own (pid 1's), with
/// who holds it: reads `proc` (`/proc`) and the named namespaces in `netns_dir`
/// (`/run/netns`). Processes that exit meanwhile are skipped.
pub fn scan(proc: &Path, netns_dir: &Path) -> HashMap<IpAddr, AddressOwner> {
    let names: HashMap<u64, String> = std::fs::read_dir(netns_dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let ino = std::fs::metadata(e.path()).ok()?.ino();
            Some((ino, e.file_name().to_str()?.to_string()))
        })
        .collect();
    let host = ns_inode(&proc.join("1/ns/net"));
    // Namespace inode → (its owner, a process inside it).
    let mut spaces: HashMap<u64, (AddressOwner, u32)> = HashMap::new();
    let pids = std::fs::read_dir(proc)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok());
    for pid in pids {
        let dir = proc.join(pid.to_string());
        let Some(ino) = ns_inode(&dir.join("ns/net")) else {
            continue;
        };
        if Some(ino) == host {
            continue;
        }
        if !spaces.contains_key(&ino) && spaces.len() >= MAX_NAMESPACES {
            continue;
        }
        let entry = spaces.entry(ino).or_insert_with(|| {
            let owner = AddressOwner {
                pod_uid: None,
                netns_name: names.get(&ino).cloned(),
            };
            (owner, pid)
        });
        // The first of its processes that is in a pod names the pod.
        if entry.0.pod_uid.is_none() {
            if let Ok(cg) = std::fs::read_to_string(dir.join("cgroup")) {
                entry.0.pod_uid = crate::proxy::cgroup::attribute_proc_cgroup(&cg).pod_uid;
            }
        }
    }
    let mut out = HashMap::new();
    for (owner, pid) in spaces.into_values() {
        let net = proc.join(pid.to_string()).join("net");
        let v4 = std::fs::read_to_string(net.join("fib_trie")).unwrap_or_default();
        let v6 = std::fs::read_to_string(net.join("if_inet6")).unwrap_or_default();
        let addrs = fib_trie_locals(&v4)
            .into_iter()
            .map(IpAddr::from)
            .chain(if_inet6_addresses(&v6).into_iter().map(IpAddr::from));
        for a in addrs {
            out.insert(a, owner.clone());
        }
    }
    out
}

/// Least time between two scans of [`AddressBook`].
const RESCAN_AFTER: Duration = Duration::from_secs(10);

/// The node's addresses and who holds them, scanned again when an address nobody held at
/// the last scan is asked for (at most every 10 s: a scan reads every process's namespace).
#[derive(Debug)]
pub struct AddressBook {
    proc: PathBuf,
    netns_dir: PathBuf,
    owners: HashMap<IpAddr, AddressOwner>,
    scanned: Option<Instant>,
}

impl Default for AddressBook {
    fn default() -> Self {
        Self::new("/proc", "/run/netns")
    }
}

impl AddressBook {
    /// A book of the node whose processes are under `proc` and named namespaces under
    /// `netns_dir`; nothing is read before the first question.
    pub fn new(proc: impl Into<PathBuf>, netns_dir: impl Into<PathBuf>) -> Self {
        Self {
            proc: proc.into(),
            netns_dir: netns_dir.into(),
            owners: HashMap::new(),
            scanned: None,
        }
    }

    /// Who holds `a`, if anybody did at the latest scan.
    pub fn owner(&mut self, a: IpAddr) -> Option<&AddressOwner> {
        let stale = self.scanned.is_none_or(|t| t.elapsed() >= RESCAN_AFTER);
        if !self.owners.contains_key(&a) && stale {
            self.owners = scan(&self.proc, &self.netns_dir);
            self.scanned = Some(Instant::now());
        }
        self.owners.get(&a)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A pod's table as the kernel prints it: its own address is a `/32 host LOCAL` leaf
    /// (in both the Main and the Local trie), the subnet and broadcast are not.
    #[test]
    fn the_local_leaves_of_fib_trie_are_the_pods_addresses() {
        let text = "Main:\n  +-- 0.0.0.0/0 3 0 5\n     |-- 0.0.0.0\n        /0 universe UNICAST\n     +-- 10.77.0.0/24 2 0 2\n        +-- 10.77.0.0/30 2 0 2\n           |-- 10.77.0.0\n              /24 link UNICAST\n           |-- 10.77.0.2\n              /32 host LOCAL\n        |-- 10.77.0.255\n           /32 link BROADCAST\n     +-- 127.0.0.0/8 2 0 2\n        |-- 127.0.0.1\n           /32 host LOCAL\nLocal:\n  +-- 0.0.0.0/0 3 0 5\n           |-- 10.77.0.2\n              /32 host LOCAL\n";
        assert_eq!(fib_trie_locals(text), vec![Ipv4Addr::new(10, 77, 0, 2)]);
        assert_eq!(fib_trie_locals(""), Vec::<Ipv4Addr>::new());
        assert!(fib_trie_locals("|-- not an address\n/32 host LOCAL\n").is_empty());
    }

    #[test]
    fn if_inet6_gives_global_and_unique_local_addresses() {
        let text = "fd770000000000000000000000000002 02 40 00 80 smplab-s\n\
                    00000000000000000000000000000001 01 80 10 80 lo\n\
                    fe80000000000000a8c1abfffe0d2e3f 02 40 20 80 smplab-s\n\
                    short 02 40 00 80 x\n";
        assert_eq!(
            if_inet6_addresses(text),
            vec!["fd77::2".parse::<Ipv6Addr>().unwrap()]
        );
    }
}
