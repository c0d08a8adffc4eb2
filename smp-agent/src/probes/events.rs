//! Decoding of ring-buffer records (pure: bytes in, typed events out).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use smp_common::{
    event::{EventHeader, EventKind, ProcessExec, ProcessExit, ProcessFork},
    hop::{
        ExchangeRecord, SendDone, TcpRtt, Tuple, PAIRED_BY_MASK, PAIRED_BY_SHIFT, SOCK_H2,
        SOCK_STREAM, SOCK_TLS,
    },
    ABI_VERSION,
};

use crate::aggregate::hops::{canonical_addr, Conn, Exchange, PairedBy};

/// An event from the kernel programs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[allow(
    clippy::large_enum_variant,
    reason = "decoded one at a time and consumed at once: boxing would allocate per exchange"
)]
pub enum ProbeEvent {
    /// A tracked process exited.
    ProcessExit { tgid: u32, ts_ns: u64 },
    /// A process (any, tracked or not) called execve.
    ProcessExec { tgid: u32, ts_ns: u64 },
    /// A tracked process forked a new process.
    ProcessFork {
        parent_tgid: u32,
        child_tgid: u32,
        ts_ns: u64,
    },
    /// An exchange paired through a tracked proxy.
    Exchange(Exchange),
    /// The write that forwarded the response of thread `tid`'s exchange with
    /// `resp_out_ns == out_ns` returned at `sent_ns`.
    SendDone {
        tgid: u32,
        tid: u32,
        out_ns: u64,
        sent_ns: u64,
    },
}

/// A kernel tuple as socket addresses (`None` when unknown or not IP).
pub fn conn(t: &Tuple, flags: u8) -> Conn {
    let addr = |a: &[u8; 16], port: u16| -> Option<SocketAddr> {
        let ip = match t.family {
            2 => IpAddr::V4(Ipv4Addr::new(a[0], a[1], a[2], a[3])),
            10 => IpAddr::V6(Ipv6Addr::from(*a)),
            _ => return None,
        };
        Some(canonical_addr(SocketAddr::new(ip, port)))
    };
    Conn {
        local: addr(&t.local_addr, t.local_port),
        remote: addr(&t.remote_addr, t.remote_port),
        tls: flags & SOCK_TLS != 0,
        // A stream's state stands for its plain HTTP/2 connection.
        h2: flags & (SOCK_H2 | SOCK_STREAM) != 0,
    }
}

/// Why a record could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("record of {got} bytes is shorter than the {need} its kind needs")]
    TooShort { got: usize, need: usize },
    #[error("record written by ABI version {got}, this agent speaks {ABI_VERSION}")]
    Abi { got: u32 },
    #[error("unknown event kind {0}")]
    UnknownKind(u32),
}

fn read<T: Copy>(bytes: &[u8]) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort {
            got: bytes.len(),
            need,
        });
    }
    // SAFETY: length checked; T is a #[repr(C)] plain-old-data type from smp-common;
    // read_unaligned copes with any alignment.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decodes one ring-buffer record; one that does not decode is counted in `undecodable`
/// (loss is data: exported as `smp_events_lost_total{reason="undecodable"}`).
pub fn decode_or_count(bytes: &[u8], undecodable: &mut u64) -> Option<ProbeEvent> {
    match decode(bytes) {
        Ok(e) => Some(e),
        Err(e) => {
            *undecodable += 1;
            tracing::debug!(error = %e, "undecodable ring-buffer record");
            None
        }
    }
}

/// Decodes one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<ProbeEvent, DecodeError> {
    let header: EventHeader = read(bytes)?;
    if header.abi != ABI_VERSION {
        return Err(DecodeError::Abi { got: header.abi });
    }
    match EventKind::from_u32(header.kind) {
        Some(EventKind::ProcessExit) => {
            let e: ProcessExit = read(bytes)?;
            Ok(ProbeEvent::ProcessExit {
                tgid: e.tgid,
                ts_ns: e.header.ts_ns,
            })
        }
        Some(EventKind::ProcessExec) => {
            let e: ProcessExec = read(bytes)?;
            Ok(ProbeEvent::ProcessExec {
                tgid: e.tgid,
                ts_ns: e.header.ts_ns,
            })
        }
        Some(EventKind::ProcessFork) => {
            let e: ProcessFork = read(bytes)?;
            Ok(ProbeEvent::ProcessFork {
                parent_tgid: e.parent_tgid,
                child_tgid: e.child_tgid,
                ts_ns: e.header.ts_ns,
            })
        }
        Some(EventKind::Exchange) => {
            let r: ExchangeRecord = read(bytes)?;
            Ok(ProbeEvent::Exchange(Exchange {
                tgid: r.tgid,
                tid: r.tid,
                req_in_ns: r.req_in_ns,
                req_out_ns: r.req_out_ns,
                resp_in_ns: r.resp_in_ns,
                resp_out_ns: r.resp_out_ns,
                req_arrival_ns: r.req_arrival_ns,
                resp_arrival_ns: r.resp_arrival_ns,
                req_sent_ns: r.req_sent_ns,
                req_bytes: r.req_bytes,
                resp_bytes: r.resp_bytes,
                downstream: conn(&r.downstream, r.flags as u8),
                upstream: conn(&r.upstream, (r.flags >> 8) as u8),
                paired_by: PairedBy::from_wire((r.flags >> PAIRED_BY_SHIFT) & PAIRED_BY_MASK),
                upstream_rtt: TcpRtt {
                    srtt_us: r.up_srtt_us,
                    rttvar_us: r.up_rttvar_us,
                    min_rtt_us: r.up_min_rtt_us,
                    _pad: 0,
                },
            }))
        }
        Some(EventKind::SendDone) => {
            let e: SendDone = read(bytes)?;
            Ok(ProbeEvent::SendDone {
                tgid: e.tgid,
                tid: e.tid,
                out_ns: e.out_ns,
                sent_ns: e.sent_ns,
            })
        }
        None => Err(DecodeError::UnknownKind(header.kind)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes_of<T: Copy>(v: &T) -> Vec<u8> {
        // SAFETY: T is plain-old-data without padding (sizes asserted in smp-common).
        unsafe {
            std::slice::from_raw_parts((v as *const T).cast::<u8>(), std::mem::size_of::<T>())
        }
        .to_vec()
    }

    #[test]
    fn round_trips_process_exit() {
        let e = ProcessExit {
            header: EventHeader {
                kind: EventKind::ProcessExit as u32,
                abi: ABI_VERSION,
                ts_ns: 42,
            },
            tgid: 1234,
            _pad: 0,
        };
        assert_eq!(
            decode(&bytes_of(&e)),
            Ok(ProbeEvent::ProcessExit {
                tgid: 1234,
                ts_ns: 42
            })
        );
    }

    #[test]
    fn round_trips_exec_and_fork() {
        let header = |kind: EventKind| EventHeader {
            kind: kind as u32,
            abi: ABI_VERSION,
            ts_ns: 9,
        };
        let exec = ProcessExec {
            header: header(EventKind::ProcessExec),
            tgid: 77,
            _pad: 0,
        };
        assert_eq!(
            decode(&bytes_of(&exec)),
            Ok(ProbeEvent::ProcessExec { tgid: 77, ts_ns: 9 })
        );
        let fork = ProcessFork {
            header: header(EventKind::ProcessFork),
            parent_tgid: 77,
            child_tgid: 78,
        };
        assert_eq!(
            decode(&bytes_of(&fork)),
            Ok(ProbeEvent::ProcessFork {
                parent_tgid: 77,
                child_tgid: 78,
                ts_ns: 9
            })
        );
    }

    #[test]
    fn round_trips_send_done() {
        let e = SendDone {
            header: EventHeader {
                kind: EventKind::SendDone as u32,
                abi: ABI_VERSION,
                ts_ns: 5,
            },
            tgid: 3,
            tid: 4,
            out_ns: 100,
            sent_ns: 130,
        };
        assert_eq!(
            decode(&bytes_of(&e)),
            Ok(ProbeEvent::SendDone {
                tgid: 3,
                tid: 4,
                out_ns: 100,
                sent_ns: 130
            })
        );
    }

    #[test]
    fn a_dual_stack_tuple_decodes_to_ipv4_addresses() {
        // What a socket of a `[::]` listener reports for an IPv4 peer: family AF_INET6,
        // addresses ::ffff:a.b.c.d.
        let mapped = |a: [u8; 4]| {
            let mut b = [0u8; 16];
            b[10] = 0xff;
            b[11] = 0xff;
            b[12..].copy_from_slice(&a);
            b
        };
        let t = Tuple {
            family: 10,
            local_port: 15001,
            remote_port: 40000,
            _pad: 0,
            local_addr: mapped([127, 0, 0, 1]),
            remote_addr: mapped([10, 0, 0, 1]),
        };
        let c = conn(&t, 0);
        assert_eq!(c.local, Some("127.0.0.1:15001".parse().unwrap()));
        assert_eq!(c.remote, Some("10.0.0.1:40000".parse().unwrap()));
        let mut v6 = t;
        v6.local_addr = "fd77::2".parse::<Ipv6Addr>().unwrap().octets();
        assert_eq!(conn(&v6, 0).local, Some("[fd77::2]:15001".parse().unwrap()));
    }

    #[test]
    fn round_trips_exchange_with_ipv4_tuples() {
        let mut r = ExchangeRecord {
            header: EventHeader {
                kind: EventKind::Exchange as u32,
                abi: ABI_VERSION,
                ts_ns: 1,
            },
            tgid: 7,
            ..ExchangeRecord::default()
        };
        (r.req_in_ns, r.req_out_ns, r.resp_in_ns, r.resp_out_ns) = (10, 20, 30, 45);
        (r.req_arrival_ns, r.resp_arrival_ns, r.req_sent_ns) = (4, 27, 26);
        r.downstream.family = 2;
        r.downstream.local_addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        r.downstream.local_port = 15001;
        r.downstream.remote_addr[..4].copy_from_slice(&[10, 0, 0, 1]);
        r.downstream.remote_port = 40000;
        r.flags = u32::from(SOCK_TLS) << 8;
        (r.up_srtt_us, r.up_rttvar_us, r.up_min_rtt_us) = (300, 20, 12);
        let Ok(ProbeEvent::Exchange(e)) = decode(&bytes_of(&r)) else {
            panic!("not an exchange")
        };
        assert_eq!((e.request_hop_ns(), e.response_hop_ns()), (10, 15));
        let rtt = e.upstream_rtt;
        assert_eq!((rtt.srtt_us, rtt.rttvar_us, rtt.min_rtt_us), (300, 20, 12));
        assert_eq!((e.request_wait_ns(), e.response_wait_ns()), (6, 3));
        assert_eq!(e.request_send_ns(), 6);
        assert_eq!(e.downstream.local, Some("127.0.0.1:15001".parse().unwrap()));
        assert_eq!(e.downstream.remote, Some("10.0.0.1:40000".parse().unwrap()));
        assert!(!e.downstream.tls && e.upstream.tls);
        assert_eq!(e.upstream.local, None, "family 0: unknown");
        use crate::aggregate::hops::WireProtocol::{H2c, Http1, Tls};
        assert_eq!((e.sides().downstream, e.sides().upstream), (Http1, Tls));
        // An HTTP/2 stream's state (downstream) and a plain HTTP/2 connection (upstream).
        for (down, up, want) in [
            (SOCK_STREAM, SOCK_H2, (H2c, H2c)),
            (0, SOCK_STREAM, (Http1, H2c)),
            (SOCK_H2 | SOCK_TLS, 0, (Tls, Http1)),
        ] {
            r.flags = u32::from(down) | u32::from(up) << 8;
            let Ok(ProbeEvent::Exchange(e)) = decode(&bytes_of(&r)) else {
                panic!("not an exchange")
            };
            assert_eq!((e.sides().downstream, e.sides().upstream), want);
            assert_eq!(e.paired_by, PairedBy::Unknown, "flags' low bytes only");
        }
    }

    #[test]
    fn rejects_short_foreign_and_unknown_records() {
        let mut e = ProcessExit::default();
        e.header.kind = EventKind::ProcessExit as u32;
        e.header.abi = ABI_VERSION;
        let b = bytes_of(&e);
        assert_eq!(
            decode(&b[..20]),
            Err(DecodeError::TooShort { got: 20, need: 24 })
        );
        assert_eq!(
            decode(&b[..4]),
            Err(DecodeError::TooShort { got: 4, need: 16 })
        );
        e.header.abi = ABI_VERSION + 1;
        assert_eq!(
            decode(&bytes_of(&e)),
            Err(DecodeError::Abi {
                got: ABI_VERSION + 1
            })
        );
        e.header.abi = ABI_VERSION;
        e.header.kind = 999;
        assert_eq!(decode(&bytes_of(&e)), Err(DecodeError::UnknownKind(999)));
    }

    #[test]
    fn records_that_do_not_decode_are_counted() {
        let mut e = ProcessExit::default();
        e.header.kind = EventKind::ProcessExit as u32;
        e.header.abi = ABI_VERSION;
        e.tgid = 42;
        let good = bytes_of(&e);
        let mut foreign = e;
        foreign.header.abi = ABI_VERSION + 1;
        let foreign = bytes_of(&foreign);
        let mut undecodable = 0;
        let records: [&[u8]; 4] = [&good, &good[..5], &foreign, &good];
        let decoded: Vec<_> = records
            .iter()
            .filter_map(|r| decode_or_count(r, &mut undecodable))
            .collect();
        assert_eq!(decoded.len(), 2);
        assert!(matches!(
            decoded[0],
            ProbeEvent::ProcessExit { tgid: 42, .. }
        ));
        assert_eq!(undecodable, 2, "a short and a foreign record");
    }
}
