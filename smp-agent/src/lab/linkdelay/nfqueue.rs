//! The few netfilter-queue messages the slow link needs (`nfnetlink_queue`, see the kernel's
//! `include/uapi/linux/netfilter/nfnetlink_queue.h`): bind a queue with metadata-only copies,
//! receive the ids of queued packets, accept one. On a socket of our own, so the process can
//! sleep until a packet arrives *or* a verdict is due (`ppoll` with a deadline); the crates
//! that wrap these messages keep their socket to themselves.

use std::{io, os::fd::AsRawFd as _, os::fd::FromRawFd as _, os::fd::OwnedFd, time::Duration};

const NFNL_SUBSYS_QUEUE: u16 = 3;
const NFQNL_MSG_PACKET: u16 = 0;
const NFQNL_MSG_VERDICT: u16 = 1;
const NFQNL_MSG_CONFIG: u16 = 2;
const NFQA_PACKET_HDR: u16 = 1;
const NFQA_VERDICT_HDR: u16 = 2;
const NFQA_CFG_CMD: u16 = 1;
const NFQA_CFG_PARAMS: u16 = 2;
const NFQA_CFG_QUEUE_MAXLEN: u16 = 3;
const NFQNL_CFG_CMD_BIND: u8 = 1;
const NFQNL_COPY_META: u8 = 1;
const NF_ACCEPT: u32 = 1;
const NLM_F_REQUEST: u16 = 1;
const NLM_F_ACK: u16 = 4;
const NLMSG_ERROR: u16 = 2;
/// Attribute type bits that are flags (nested, network byte order), not the type.
const NLA_TYPE_MASK: u16 = 0x3fff;
const NLMSG_HDRLEN: usize = 16;
const NFGENMSG_LEN: usize = 4;

/// One netlink message to the queue subsystem: header, `nfgenmsg` (family unspecified,
/// version 0, the queue number as resource id), then each attribute padded to 4 bytes.
pub fn message(kind: u16, flags: u16, queue: u16, attrs: &[(u16, &[u8])]) -> Vec<u8> {
    let mut m = vec![0u8; NLMSG_HDRLEN];
    m.extend_from_slice(&[0, 0]);
    m.extend_from_slice(&queue.to_be_bytes());
    for (ty, payload) in attrs {
        let len = 4 + payload.len();
        m.extend_from_slice(&(len as u16).to_ne_bytes());
        m.extend_from_slice(&ty.to_ne_bytes());
        m.extend_from_slice(payload);
        m.resize(m.len().next_multiple_of(4), 0);
    }
    let total = m.len() as u32;
    m[0..4].copy_from_slice(&total.to_ne_bytes());
    m[4..6].copy_from_slice(&((NFNL_SUBSYS_QUEUE << 8) | kind).to_ne_bytes());
    m[6..8].copy_from_slice(&flags.to_ne_bytes());
    m
}

/// Binding `queue`: bind, copy metadata only (no payload leaves the kernel), at most
/// `max_len` packets held.
pub fn bind_messages(queue: u16, max_len: u32) -> [Vec<u8>; 3] {
    let flags = NLM_F_REQUEST | NLM_F_ACK;
    let cmd = [NFQNL_CFG_CMD_BIND, 0, 0, 0];
    let mut params = [0u8; 5];
    params[4] = NFQNL_COPY_META;
    [
        message(NFQNL_MSG_CONFIG, flags, queue, &[(NFQA_CFG_CMD, &cmd)]),
        message(
            NFQNL_MSG_CONFIG,
            flags,
            queue,
            &[(NFQA_CFG_PARAMS, &params)],
        ),
        message(
            NFQNL_MSG_CONFIG,
            flags,
            queue,
            &[(NFQA_CFG_QUEUE_MAXLEN, &max_len.to_be_bytes())],
        ),
    ]
}

/// Accepting packet `id` of `queue`.
pub fn accept_message(queue: u16, id: u32) -> Vec<u8> {
    let mut hdr = [0u8; 8];
    hdr[..4].copy_from_slice(&NF_ACCEPT.to_be_bytes());
    hdr[4..].copy_from_slice(&id.to_be_bytes());
    message(
        NFQNL_MSG_VERDICT,
        NLM_F_REQUEST,
        queue,
        &[(NFQA_VERDICT_HDR, &hdr)],
    )
}

/// What one received netlink message says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// A queued packet, by its id.
    Packet(u32),
    /// An acknowledgement: 0, or the negative errno of a refused request.
    Ack(i32),
}

/// The messages of one datagram, in order; a truncated or malformed one ends the walk.
pub fn parse(buf: &[u8]) -> Vec<Reply> {
    let mut out = Vec::new();
    let mut rest = buf;
    while rest.len() >= NLMSG_HDRLEN {
        let len = u32::from_ne_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        if len < NLMSG_HDRLEN || len > rest.len() {
            break;
        }
        let ty = u16::from_ne_bytes([rest[4], rest[5]]);
        let body = &rest[NLMSG_HDRLEN..len];
        if ty == NLMSG_ERROR && body.len() >= 4 {
            out.push(Reply::Ack(i32::from_ne_bytes([
                body[0], body[1], body[2], body[3],
            ])));
        } else if ty == (NFNL_SUBSYS_QUEUE << 8) | NFQNL_MSG_PACKET {
            if let Some(id) = packet_id(body.get(NFGENMSG_LEN..).unwrap_or(&[])) {
                out.push(Reply::Packet(id));
            }
        }
        rest = rest.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    out
}

/// The packet id in a packet message's attributes (`NFQA_PACKET_HDR`: id, hardware protocol,
/// hook).
fn packet_id(mut attrs: &[u8]) -> Option<u32> {
    while attrs.len() >= 4 {
        let len = u16::from_ne_bytes([attrs[0], attrs[1]]) as usize;
        let ty = u16::from_ne_bytes([attrs[2], attrs[3]]) & NLA_TYPE_MASK;
        if len < 4 || len > attrs.len() {
            return None;
        }
        if ty == NFQA_PACKET_HDR && len >= 8 {
            return Some(u32::from_be_bytes([attrs[4], attrs[5], attrs[6], attrs[7]]));
        }
        attrs = attrs.get(len.next_multiple_of(4)..).unwrap_or(&[]);
    }
    None
}

/// A netfilter netlink socket.
pub struct Socket {
    fd: OwnedFd,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Socket {
    /// A netlink socket of the netfilter family, bound to a port id of the kernel's choosing.
    pub fn open() -> io::Result<Socket> {
        // SAFETY: socket() has no preconditions; the fd it returns is owned here only.
        let fd = check(unsafe {
            libc::socket(
                libc::AF_NETLINK,
                libc::SOCK_RAW | libc::SOCK_CLOEXEC,
                libc::NETLINK_NETFILTER,
            )
        })?;
        // SAFETY: fd was just returned by socket() and nothing else owns it.
        let sock = Socket {
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        };
        // SAFETY: sockaddr_nl is plain data; zero is its unspecified address (port id chosen
        // by the kernel).
        let mut addr: libc::sockaddr_nl = unsafe { std::mem::zeroed() };
        addr.nl_family = libc::AF_NETLINK as libc::sa_family_t;
        // SAFETY: addr lives across the call and its size is passed.
        check(unsafe {
            libc::bind(
                fd,
                std::ptr::addr_of!(addr).cast(),
                std::mem::size_of::<libc::sockaddr_nl>() as libc::socklen_t,
            )
        })?;
        // Room for a burst of packet messages (about 100 bytes each with metadata only).
        let size: libc::c_int = 4 << 20;
        // SAFETY: the option value lives across the call and its size is passed.
        check(unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                libc::SO_RCVBUF,
                std::ptr::addr_of!(size).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        })?;
        Ok(sock)
    }

    fn send(&self, m: &[u8]) -> io::Result<()> {
        // SAFETY: m is a valid buffer of its length; the kernel is the destination (port 0).
        let n = check(
            unsafe { libc::send(self.fd.as_raw_fd(), m.as_ptr().cast(), m.len(), 0) }
                as libc::c_int,
        )?;
        if n as usize != m.len() {
            return Err(io::Error::other("short netlink send"));
        }
        Ok(())
    }

    /// Binds `queue` ([`bind_messages`]), each request acknowledged.
    pub fn configure(&self, queue: u16, max_len: u32) -> io::Result<()> {
        let mut buf = vec![0u8; 8192];
        for m in bind_messages(queue, max_len) {
            self.send(&m)?;
            loop {
                // SAFETY: buf is a valid writable buffer of its length.
                let n = check(unsafe {
                    libc::recv(self.fd.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len(), 0)
                } as libc::c_int)?;
                match parse(&buf[..n as usize]).first() {
                    Some(Reply::Ack(0)) => break,
                    Some(Reply::Ack(e)) => return Err(io::Error::from_raw_os_error(-e)),
                    _ => continue,
                }
            }
        }
        Ok(())
    }

    /// Sleeps until a message is waiting (true) or `timeout` has passed (false); `None`: no
    /// limit.
    pub fn wait(&self, timeout: Option<Duration>) -> io::Result<bool> {
        let mut pfd = libc::pollfd {
            fd: self.fd.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        let ts = timeout.map(|t| libc::timespec {
            tv_sec: t.as_secs() as libc::time_t,
            tv_nsec: t.subsec_nanos() as libc::c_long,
        });
        let tsp = ts.as_ref().map_or(std::ptr::null(), std::ptr::from_ref);
        // SAFETY: pfd and ts live across the call; one fd; no signal mask.
        match check(unsafe { libc::ppoll(&mut pfd, 1, tsp, std::ptr::null()) }) {
            Ok(n) => Ok(n > 0),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(false),
            Err(e) => Err(e),
        }
    }

    /// Takes every message waiting, calling `packet` with each queued packet's id in order.
    /// A receive buffer that overflowed lost packet messages: the kernel dropped those
    /// packets and counts them (`user_dropped`), so the walk goes on.
    pub fn receive(&self, buf: &mut [u8], mut packet: impl FnMut(u32)) -> io::Result<()> {
        loop {
            // SAFETY: buf is a valid writable buffer of its length.
            let n = unsafe {
                libc::recv(
                    self.fd.as_raw_fd(),
                    buf.as_mut_ptr().cast(),
                    buf.len(),
                    libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                match e.raw_os_error() {
                    Some(libc::EAGAIN) => return Ok(()),
                    Some(libc::EINTR | libc::ENOBUFS) => continue,
                    _ => return Err(e),
                }
            }
            for r in parse(&buf[..n as usize]) {
                match r {
                    Reply::Packet(id) => packet(id),
                    // A refused verdict (a packet the kernel no longer holds) is not fatal.
                    Reply::Ack(e) if e != 0 => {
                        tracing::warn!(errno = -e, "netfilter queue refused a verdict")
                    }
                    Reply::Ack(_) => {}
                }
            }
        }
    }

    /// Accepts packet `id` of `queue`: it goes on its way.
    pub fn accept(&self, queue: u16, id: u32) -> io::Result<()> {
        self.send(&accept_message(queue, id))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The bind command as the kernel reads it: length, subsystem and type, flags, the queue
    /// in network order, one attribute padded to 4 bytes.
    #[test]
    fn a_bind_message_is_laid_out_as_the_kernel_reads_it() {
        let [bind, params, maxlen] = bind_messages(77, 16_384);
        assert_eq!(bind.len(), 16 + 4 + 8);
        assert_eq!(u32::from_ne_bytes(bind[0..4].try_into().unwrap()), 28);
        assert_eq!(u16::from_ne_bytes(bind[4..6].try_into().unwrap()), 0x0302);
        assert_eq!(u16::from_ne_bytes(bind[6..8].try_into().unwrap()), 5);
        assert_eq!(&bind[16..20], &[0, 0, 0, 77]);
        assert_eq!(u16::from_ne_bytes(bind[20..22].try_into().unwrap()), 8);
        assert_eq!(u16::from_ne_bytes(bind[22..24].try_into().unwrap()), 1);
        assert_eq!(&bind[24..28], &[1, 0, 0, 0]);
        // Params: 5 bytes (copy range 0, metadata only), padded to 8.
        assert_eq!(params.len(), 16 + 4 + 12);
        assert_eq!(u16::from_ne_bytes(params[20..22].try_into().unwrap()), 9);
        assert_eq!(&params[24..29], &[0, 0, 0, 0, NFQNL_COPY_META]);
        assert_eq!(&maxlen[24..28], &16_384u32.to_be_bytes());
    }

    #[test]
    fn a_verdict_accepts_one_packet_id() {
        let v = accept_message(77, 0x0102_0304);
        assert_eq!(v.len(), 16 + 4 + 12);
        assert_eq!(u16::from_ne_bytes(v[4..6].try_into().unwrap()), 0x0301);
        assert_eq!(
            u16::from_ne_bytes(v[6..8].try_into().unwrap()),
            1,
            "no ack asked"
        );
        assert_eq!(&v[24..28], &1u32.to_be_bytes(), "NF_ACCEPT");
        assert_eq!(&v[28..32], &[1, 2, 3, 4]);
    }

    /// A packet message with another attribute first, an ack, an error: read in order; a
    /// truncated tail and malformed attributes are skipped, never read past.
    #[test]
    fn received_messages_give_packet_ids_and_acks() {
        let mut hdr = 42u32.to_be_bytes().to_vec();
        hdr.extend_from_slice(&[0x08, 0x00, 3]);
        let mut pkt = message(
            NFQNL_MSG_PACKET,
            0,
            77,
            &[(5, &[9, 9]), (NFQA_PACKET_HDR, &hdr)],
        );
        let mut err = vec![0u8; 16 + 4];
        err[0..4].copy_from_slice(&20u32.to_ne_bytes());
        err[4..6].copy_from_slice(&NLMSG_ERROR.to_ne_bytes());
        err[16..20].copy_from_slice(&(-1i32).to_ne_bytes());
        let mut ack = err.clone();
        ack[16..20].copy_from_slice(&0i32.to_ne_bytes());
        let mut buf = pkt.clone();
        buf.extend_from_slice(&ack);
        buf.extend_from_slice(&err);
        buf.extend_from_slice(&pkt[..10]);
        assert_eq!(
            parse(&buf),
            vec![Reply::Packet(42), Reply::Ack(0), Reply::Ack(-1)]
        );
        // An attribute whose length runs past the message: no id, no panic.
        pkt[20..22].copy_from_slice(&200u16.to_ne_bytes());
        assert_eq!(parse(&pkt), vec![]);
        // A header whose length is below its own size ends the walk.
        let mut bad = ack.clone();
        bad[0..4].copy_from_slice(&3u32.to_ne_bytes());
        assert_eq!(parse(&bad), vec![]);
        assert_eq!(parse(&[]), vec![]);
    }
}
