//! Host tests of the HTTP/2 frame walk: real frame sequences cut into reads as a socket
//! would deliver them.

extern crate std;
use std::vec::Vec;

use super::*;

/// A walk as the kernel runs it: the frames of one read of `data`, of which the first
/// `readable` bytes can be read (a first iovec), from where `w` stands, each handed to
/// `frame`; a header split at its end is carried to the next read.
fn walk(
    w: &mut H2Walk,
    data: &[u8],
    readable: usize,
    mut frame: impl FnMut(&FrameHeader),
) -> WalkEnd {
    let len = data.len() as u64;
    let header = |off: u64| -> Option<[u8; 9]> {
        let off = off as usize;
        (off + 9 <= readable).then(|| data[off..off + 9].try_into().unwrap())
    };
    let mut c = if w.split != 0 {
        let head = header(0);
        Cursor::joined(w, head.unwrap_or([0; 9]), head.is_some(), len)
    } else {
        Cursor::new(w.skip, len)
    };
    for _ in 0..MAX_FRAMES {
        let h = match c.carried() {
            Some(h) => h,
            None => {
                let Some(off) = c.next() else {
                    break;
                };
                let Some(b) = header(off) else {
                    c.unreadable();
                    break;
                };
                let h = FrameHeader::parse(&b);
                if !c.advance(&h) {
                    break;
                }
                h
            }
        };
        frame(&h);
    }
    let (_, end) = c.end();
    let tail: Option<[u8; 8]> = c
        .tail_at()
        .filter(|_| data.len() <= readable)
        .map(|at| data[at as usize..].try_into().unwrap());
    let lost_now = w.carry(&c, tail.unwrap_or([0; 8]), tail.is_some());
    assert_eq!(
        lost_now,
        end == WalkEnd::Lost || (end == WalkEnd::Split && tail.is_none())
    );
    end
}

const SETTINGS: u8 = 4;
const WINDOW_UPDATE: u8 = 8;
const DATA: u8 = 0;

fn frame(out: &mut Vec<u8>, kind: u8, flags: u8, stream: u32, payload: usize) {
    let len = payload as u32;
    out.extend_from_slice(&[(len >> 16) as u8, (len >> 8) as u8, len as u8, kind, flags]);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend(core::iter::repeat_n(0xab, payload));
}

/// A client's bytes: preface, SETTINGS, then `n` requests (HEADERS; every third with a DATA
/// body and trailers), a WINDOW_UPDATE now and then. Returns the bytes and the offsets where
/// a frame header starts.
fn client(n: u32) -> (Vec<u8>, Vec<usize>) {
    let mut b = Vec::new();
    let mut starts = Vec::new();
    b.extend_from_slice(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    starts.push(b.len());
    frame(&mut b, SETTINGS, 0, 0, 18);
    for i in 0..n {
        let s = 2 * i + 1;
        starts.push(b.len());
        if i % 3 == 0 {
            frame(&mut b, TYPE_HEADERS, 4, s, 40);
            starts.push(b.len());
            frame(&mut b, DATA, 0, s, 100 + 1000 * (i as usize % 7));
            starts.push(b.len());
            frame(&mut b, TYPE_HEADERS, 5, s, 12); // trailers: not a new request
        } else {
            frame(&mut b, TYPE_HEADERS, 5, s, 30);
        }
        if i % 4 == 1 {
            starts.push(b.len());
            frame(&mut b, WINDOW_UPDATE, 0, 0, 4);
        }
    }
    (b, starts)
}

/// The requests `data` opens, walked in one read.
fn requests(w: &mut H2Walk, data: &[u8], readable: usize) -> (u32, WalkEnd) {
    let mut n = 0;
    let mut max = w.max_stream;
    let end = walk(w, data, readable, |h| n += u32::from(opens(&mut max, h)));
    w.max_stream = max;
    (n, end)
}

/// Walks `data` cut at `cuts` (increasing offsets) as successive reads.
fn walk_cut(data: &[u8], cuts: &[usize]) -> (u32, H2Walk, Vec<WalkEnd>) {
    let mut w = H2Walk::starting(true);
    let mut total = 0;
    let mut ends = Vec::new();
    let mut from = 0;
    for &to in cuts.iter().chain(core::iter::once(&data.len())) {
        let read = &data[from..to];
        let (n, end) = requests(&mut w, read, read.len());
        total += n;
        ends.push(end);
        from = to;
    }
    (total, w, ends)
}

#[test]
fn a_header_parses_length_type_flags_and_stream() {
    let mut b = Vec::new();
    frame(&mut b, TYPE_HEADERS, 5, 0x8000_0007, 0x01_0203);
    let h = FrameHeader::parse(&b[..9].try_into().unwrap());
    assert_eq!(
        h,
        FrameHeader {
            len: 0x01_0203,
            kind: TYPE_HEADERS,
            flags: 5,
            stream: 7 // the reserved bit is not part of the id
        }
    );
}

#[test]
fn every_request_is_counted_once_in_one_read() {
    let (b, _) = client(5);
    let (n, w, ends) = walk_cut(&b, &[]);
    assert_eq!((n, ends.as_slice()), (5, [WalkEnd::Done].as_slice()));
    assert_eq!(w.max_stream, 9);
    assert_eq!(w.skip, 0);
}

#[test]
fn frames_cut_anywhere_are_followed() {
    let (b, starts) = client(40);
    let inside_header = |c: usize| starts.iter().any(|&s| c > s && c < s + 9);
    // One cut per read, in several spacings and phases: reads of 9 bytes or more are cut
    // anywhere, inside frame headers too; shorter ones (a header then spans three reads,
    // which is not followed) only between headers.
    for step in [1, 2, 5, 7, 9, 11, 24, 33, 500, 4096] {
        for first in 1..step.min(12) {
            let cuts: Vec<usize> = (first..b.len())
                .step_by(step)
                .filter(|&c| step >= 9 || !inside_header(c))
                .collect();
            // The walk reads at most MAX_FRAMES headers per read: keep reads small enough.
            let (n, w, ends) = walk_cut(&b, &cuts);
            let followed = ends
                .iter()
                .all(|e| matches!(e, WalkEnd::Done | WalkEnd::Split));
            if followed {
                assert_eq!(n, 40, "step {step} from {first}");
                assert_eq!(w.skip, 0, "step {step}: ends on a frame boundary");
                assert_eq!(w.split, 0);
            } else {
                // Only reads of more frames than a walk reads lose it.
                let lost = ends.iter().filter(|e| **e == WalkEnd::Lost).count();
                assert!(step >= 500, "step {step} from {first}: {lost} lost");
            }
        }
    }
}

#[test]
fn a_header_split_across_reads_is_joined() {
    let (b, starts) = client(8);
    // Cut inside the header of the 4th frame, at every byte of it; the next read starts
    // with the rest of it.
    for k in 1..9 {
        let cut = starts[3] + k;
        let (n, w, ends) = walk_cut(&b, &[cut]);
        assert_eq!(ends, [WalkEnd::Split, WalkEnd::Done], "cut {k} bytes in");
        assert_eq!(n, 8, "every request seen, cut {k} bytes in");
        assert_eq!((w.skip, w.split), (0, 0));
        assert_eq!(w.max_stream, 15);
    }
    // A next read too short for the header's rest: lost, still lost at the next read (it
    // starts inside the header), then back at a frame.
    let cut = starts[3] + 2;
    let (n, _, ends) = walk_cut(&b, &[cut, cut + 4, starts[7]]);
    assert_eq!(
        ends,
        [
            WalkEnd::Split,
            WalkEnd::Lost,
            WalkEnd::StillLost,
            WalkEnd::Done
        ]
    );
    assert!((4..8).contains(&n), "{n}");
}

#[test]
fn join_takes_the_start_from_the_tail_and_the_rest_from_the_head() {
    let header: [u8; 9] = [0, 0, 30, 1, 5, 0, 0, 0, 7];
    for have in 1..9usize {
        let mut tail = [0xee; 8];
        tail[8 - have..].copy_from_slice(&header[..have]);
        let mut head = [0xdd; 9];
        head[..9 - have].copy_from_slice(&header[have..]);
        assert_eq!(join(&tail, have as u32, &head), header, "have {have}");
    }
    // Out-of-range counts are clamped, never indexed out of bounds.
    let _ = join(&[1; 8], 0, &[2; 9]);
    let _ = join(&[1; 8], 99, &[2; 9]);
}

#[test]
fn a_header_split_where_its_start_cannot_be_read_loses_the_walk() {
    let (b, starts) = client(3);
    let mut w = H2Walk::starting(true);
    // The read ends inside a header, its tail not readable (a readv's later buffer).
    let data = &b[..starts[2] + 4];
    assert_eq!(requests(&mut w, data, data.len() - 1).1, WalkEnd::Split);
    assert!(w.lost(), "counted lost: its start was not kept");
}

#[test]
fn a_write_must_start_on_a_frame() {
    let (b, starts) = client(3);
    let header = |off: u64| {
        b.get(off as usize..off as usize + 9)
            .map(|s| s.try_into().unwrap())
    };
    // From the preface's end: SETTINGS, a plausible first frame.
    let mut c = Cursor::write(PREFACE_LEN);
    let h = FrameHeader::parse(&header(c.next().unwrap()).unwrap());
    assert!(c.advance(&h));
    assert!(!c.refused());
    // Resumed inside a frame's payload (a partial write's rest): refused.
    let mut c = Cursor::write(starts[2] as u32 + 12);
    let h = FrameHeader::parse(&header(c.next().unwrap()).unwrap());
    assert!(!c.advance(&h));
    assert!(c.refused());
    assert_eq!(c.next(), None);
}

#[test]
fn plausible_headers_are_known_types_on_their_kind_of_stream() {
    let h = |kind, stream, len| FrameHeader {
        len,
        kind,
        flags: 0,
        stream,
    };
    assert!(plausible(&h(TYPE_HEADERS, 1, 100)));
    assert!(plausible(&h(SETTINGS, 0, 18)));
    assert!(plausible(&h(WINDOW_UPDATE, 0, 4)));
    assert!(plausible(&h(WINDOW_UPDATE, 3, 4)));
    assert!(!plausible(&h(SETTINGS, 1, 18)), "SETTINGS on a stream");
    assert!(
        !plausible(&h(TYPE_HEADERS, 0, 10)),
        "HEADERS on the connection"
    );
    assert!(!plausible(&h(DATA, 1, RESYNC_MAX_LEN + 1)), "too long");
    assert!(!plausible(&h(10, 1, 4)), "unknown type");
    let f = |kind, flags, stream| FrameHeader {
        len: 4,
        kind,
        flags,
        stream,
    };
    assert!(
        plausible(&f(TYPE_HEADERS, 0x25, 1)),
        "END_STREAM|END_HEADERS|PRIORITY"
    );
    assert!(plausible(&f(DATA, 0x01, 1)));
    assert!(plausible(&f(SETTINGS, 0x01, 0)), "ACK");
    // Bytes of a payload read as a header: flags the type does not define.
    assert!(!plausible(&f(TYPE_HEADERS, 0xab, 1)));
    assert!(!plausible(&f(DATA, 0x04, 1)));
    assert!(!plausible(&f(WINDOW_UPDATE, 0x01, 0)));
}

#[test]
fn more_frames_than_one_walk_reads_loses_the_walk() {
    let mut b = Vec::new();
    for i in 0..MAX_FRAMES + 1 {
        frame(&mut b, TYPE_HEADERS, 5, 2 * i + 1, 3);
    }
    let mut w = H2Walk::starting(false);
    assert_eq!(requests(&mut w, &b, b.len()), (MAX_FRAMES, WalkEnd::Lost));
    // Exactly MAX_FRAMES fit.
    b.truncate(b.len() - 12);
    let mut w = H2Walk::starting(false);
    assert_eq!(requests(&mut w, &b, b.len()), (MAX_FRAMES, WalkEnd::Done));
}

#[test]
fn a_header_it_cannot_read_loses_the_walk() {
    let (b, _) = client(3);
    let mut w = H2Walk::starting(true);
    // Only the first 40 bytes are readable (a first iovec of 40 bytes).
    assert_eq!(requests(&mut w, &b, 40).1, WalkEnd::Lost);
    assert!(w.lost());
}

#[test]
fn server_streams_and_old_streams_do_not_start_requests() {
    let mut b = Vec::new();
    frame(&mut b, TYPE_HEADERS, 5, 3, 3);
    frame(&mut b, TYPE_HEADERS, 5, 2, 3); // even: server-initiated
    frame(&mut b, TYPE_HEADERS, 5, 1, 3); // lower than one seen
    frame(&mut b, TYPE_HEADERS, 5, 0, 3); // the connection
    let mut w = H2Walk::starting(false);
    assert_eq!(requests(&mut w, &b, b.len()).0, 1);
    assert_eq!(w.max_stream, 3);
}

#[test]
fn responses_are_headers_on_client_streams_and_keys_never_collide_with_sockets() {
    let mut b = Vec::new();
    frame(&mut b, TYPE_HEADERS, 4, 5, 3);
    frame(&mut b, DATA, 1, 5, 3);
    frame(&mut b, TYPE_HEADERS, 4, 2, 3);
    let mut seen = Vec::new();
    let end = walk(&mut H2Walk::default(), &b, b.len(), |h| {
        seen.push((h.stream, answers(h)))
    });
    assert_eq!(end, WalkEnd::Done);
    assert_eq!(seen, [(5, true), (5, false), (2, false)]);
    assert_eq!(stream_key(0x1234, 7), 7 << 32 | 0x1234);
    assert!(stream_key(u64::from(u32::MAX), 1) > u64::from(u32::MAX));
}

#[test]
fn a_stream_far_past_the_last_does_not_open() {
    let mut max = 7;
    let h = |stream| FrameHeader {
        kind: TYPE_HEADERS,
        stream,
        ..FrameHeader::default()
    };
    assert!(!opens(&mut max, &h(7 + MAX_STREAM_STEP + 2)), "garbage");
    assert_eq!(max, 7);
    assert!(opens(&mut max, &h(7 + MAX_STREAM_STEP)));
    assert!(!opens(&mut max, &h(9)), "older");
}

#[test]
fn a_write_marks_its_first_streams_sent() {
    let all = |first, last| {
        (0..SENT_STREAMS + 2)
            .filter_map(|i| sent_stream(first, last, i))
            .collect::<Vec<_>>()
    };
    assert_eq!(all(5, 5), [5]);
    assert_eq!(all(5, 9), [5, 7, 9]);
    assert_eq!(all(1, 99), [1, 3, 5, 7], "at most SENT_STREAMS");
    assert!(all(0, 9).is_empty(), "no stream opened");
    assert!(all(9, 7).is_empty(), "a later write opened none");
    assert!(all(u32::MAX, u32::MAX).len() == 1);
    assert_eq!(sent_stream(u32::MAX - 1, u32::MAX, 1), None, "no overflow");
}

#[test]
fn a_write_answers_each_stream_once_in_frame_order() {
    let mut a = Answered::new(100, 7);
    assert!(!a.pending());
    assert!(a.push(11));
    assert!(a.push(13));
    assert!(a.push(11), "trailers of a stream already answered");
    assert_eq!(a.left(), 2);
    assert_eq!(a.take(), Some(11));
    assert!(a.pending());
    assert_eq!(a.take(), Some(13));
    assert_eq!(a.take(), None);
    assert!(!a.pending());
    assert_eq!((a.t_out, a.pid_tgid, a.over), (100, 7, 0));
}

#[test]
fn a_write_answering_more_than_it_holds_counts_the_rest() {
    let mut a = Answered::new(1, 1);
    for k in 0..ANSWERS_PER_WRITE as u64 {
        assert!(a.push(k + 1));
    }
    assert!(!a.push(99));
    assert!(!a.push(100));
    assert_eq!(a.over, 2);
    assert_eq!(a.left(), ANSWERS_PER_WRITE as u32);
    let taken: Vec<u64> = core::iter::from_fn(|| a.take()).collect();
    assert_eq!(taken, (1..=ANSWERS_PER_WRITE as u64).collect::<Vec<_>>());
    assert!(!a.pending());
    assert_eq!(a.left(), 0);
}

/// A write on an HTTP/2-inside-TLS downstream whose entry's chain paired `MUX_IN_ROUNDS`
/// responses resumes at its exit: the same downstream and bound (`after`), never a new
/// message (alternation paired nothing there, and the exit does not pair by it), a fresh
/// count, and the exit's time for the `SendDone` the chain's end sends.
#[test]
fn a_write_resumed_at_its_exit_searches_on_for_the_same_downstream() {
    let entry = Answered::mux_in(100, 7, 42, true, 60);
    assert_eq!(entry.mux_in_write(), Some((42, true)));
    assert_eq!(
        entry.sent, 0,
        "the entry's chain leaves the SendDone to the exit"
    );
    let a = Answered::resumed(100, 7, 42, 60, 180, 1);
    assert_eq!(a.mux_in_write(), Some((42, false)));
    assert_eq!((a.t_out, a.pid_tgid, a.after), (100, 7, 60));
    assert_eq!((a.paired, a.sent, a.emitted), (0, 180, 1));
}
