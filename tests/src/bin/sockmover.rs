//! Test workload: moves a known number of bytes over a loopback TCP pair, in a known number
//! of calls of each traced syscall, and does some non-socket I/O that must not be counted.
//!
//! Prints `ready <fd_a> <fd_b>`, waits for a line on stdin, runs the plan (see `EXPECTED` in
//! tests/tests/probes.rs), prints `done`, then waits for stdin to close.
//!
//! `sockmover fdreuse`: prints `ready`, waits for a line, then reuses one fd number for
//! sockets and non-sockets in turn (close, dup2, close_range; see `fd_numbers_reused_…` in
//! tests/tests/probes.rs), prints `done <fd> <ino_a> <ino_c> <ino_b>`, waits for stdin to close.

use std::{
    io::{BufRead as _, Write as _},
    net::{TcpListener, TcpStream},
    os::fd::AsRawFd as _,
};

const N: usize = 10;

fn check(ret: isize, want: isize, what: &str) {
    assert_eq!(ret, want, "{what}: {}", std::io::Error::last_os_error());
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("fdreuse") {
        fdreuse();
        return;
    }
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let a = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (b, _) = listener.accept().unwrap();
    let (fa, fb) = (a.as_raw_fd(), b.as_raw_fd());
    let stdin = std::io::stdin();
    let mut line = String::new();
    println!("ready {fa} {fb}");
    std::io::stdout().flush().unwrap();
    stdin.lock().read_line(&mut line).unwrap();

    let out = [7u8; 300];
    let mut buf = [0u8; 300];
    // SAFETY (whole block): plain syscalls on fds this process owns, with valid buffers.
    unsafe {
        for _ in 0..N {
            check(libc::write(fa, out.as_ptr().cast(), 100), 100, "write");
            check(libc::read(fb, buf.as_mut_ptr().cast(), 100), 100, "read");
        }
        for _ in 0..N {
            check(
                libc::sendto(fa, out.as_ptr().cast(), 200, 0, std::ptr::null(), 0),
                200,
                "sendto",
            );
            check(
                libc::recvfrom(
                    fb,
                    buf.as_mut_ptr().cast(),
                    200,
                    0,
                    std::ptr::null_mut(),
                    std::ptr::null_mut(),
                ),
                200,
                "recvfrom",
            );
        }
        for _ in 0..N {
            let iov = [
                libc::iovec {
                    iov_base: out.as_ptr() as *mut _,
                    iov_len: 50,
                },
                libc::iovec {
                    iov_base: out.as_ptr() as *mut _,
                    iov_len: 50,
                },
            ];
            check(libc::writev(fa, iov.as_ptr(), 2), 100, "writev");
            let riov = [libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: 100,
            }];
            check(libc::readv(fb, riov.as_ptr(), 1), 100, "readv");
        }
        for _ in 0..N {
            let mut iov = libc::iovec {
                iov_base: out.as_ptr() as *mut _,
                iov_len: 300,
            };
            let mut msg: libc::msghdr = std::mem::zeroed();
            msg.msg_iov = &mut iov;
            msg.msg_iovlen = 1;
            check(libc::sendmsg(fa, &msg, 0), 300, "sendmsg");
            let mut riov = libc::iovec {
                iov_base: buf.as_mut_ptr().cast(),
                iov_len: 300,
            };
            let mut rmsg: libc::msghdr = std::mem::zeroed();
            rmsg.msg_iov = &mut riov;
            rmsg.msg_iovlen = 1;
            check(libc::recvmsg(fb, &mut rmsg, 0), 300, "recvmsg");
        }
        // One failing read: EAGAIN on an empty non-blocking socket.
        libc::fcntl(
            fb,
            libc::F_SETFL,
            libc::fcntl(fb, libc::F_GETFL) | libc::O_NONBLOCK,
        );
        check(
            libc::read(fb, buf.as_mut_ptr().cast(), 100),
            -1,
            "read EAGAIN",
        );
        // The end of the stream: A shuts its side, and B reads it (0 bytes) once it is there
        // (`poll` is not counted). The probes then forget B's message state: the calls it
        // counted must stay counted.
        check(libc::shutdown(fa, libc::SHUT_WR) as isize, 0, "shutdown");
        let mut pfd = libc::pollfd {
            fd: fb,
            events: libc::POLLIN,
            revents: 0,
        };
        check(
            libc::poll(&mut pfd, 1, 5000) as isize,
            1,
            "poll for the end",
        );
        check(
            libc::read(fb, buf.as_mut_ptr().cast(), 100),
            0,
            "read the end",
        );
        // Non-socket I/O that must not be counted.
        let null = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/null")
            .unwrap();
        let zero = std::fs::File::open("/dev/zero").unwrap();
        for _ in 0..5 {
            check(
                libc::write(null.as_raw_fd(), out.as_ptr().cast(), 64),
                64,
                "write /dev/null",
            );
            check(
                libc::read(zero.as_raw_fd(), buf.as_mut_ptr().cast(), 64),
                64,
                "read /dev/zero",
            );
        }
    }
    println!("done");
    std::io::stdout().flush().unwrap();
    smp_tests::wait_for_stdin_close();
}

/// Inode number of an open fd.
fn inode(fd: i32) -> u64 {
    // SAFETY: fstat on an open fd with a valid out pointer.
    unsafe {
        let mut st: libc::stat = std::mem::zeroed();
        check(libc::fstat(fd, &mut st) as isize, 0, "fstat");
        st.st_ino
    }
}

fn open_null() -> i32 {
    // SAFETY: a NUL-terminated path.
    unsafe { libc::open(c"/dev/null".as_ptr(), libc::O_WRONLY) }
}

/// One fd number, F, is a socket, then /dev/null, then another socket, and so on: every
/// write to F while it is a socket must count under that socket, none while it is not.
fn fdreuse() {
    use std::os::fd::IntoRawFd as _;
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let mut peers = Vec::new();
    let mut connect = || {
        let s = TcpStream::connect(addr).unwrap();
        peers.push(listener.accept().unwrap().0);
        s.into_raw_fd()
    };
    let out = [7u8; 64];
    let writes = |fd: i32, n: usize, len: usize| {
        for _ in 0..n {
            // SAFETY: a plain write with a valid buffer.
            check(
                unsafe { libc::write(fd, out.as_ptr().cast(), len) },
                len as isize,
                "write",
            );
        }
    };
    println!("ready");
    std::io::stdout().flush().unwrap();
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).unwrap();

    // SAFETY (whole block): plain syscalls on fds this process owns.
    unsafe {
        // Socket A on F: counted.
        let f = connect();
        let ino_a = inode(f);
        writes(f, 3, 10);
        // F closed, then reopened as /dev/null: not counted.
        check(libc::close(f) as isize, 0, "close");
        check(open_null() as isize, f as isize, "/dev/null takes F");
        writes(f, 5, 64);
        // F closed, then socket C on F: counted under C.
        check(libc::close(f) as isize, 0, "close");
        check(connect() as isize, f as isize, "socket C takes F");
        let ino_c = inode(f);
        writes(f, 4, 20);
        // dup2 of /dev/null over F: not counted.
        let null = open_null();
        check(libc::dup2(null, f) as isize, f as isize, "dup2 /dev/null");
        check(libc::close(null) as isize, 0, "close");
        writes(f, 2, 64);
        // dup2 of socket B over F: counted under B.
        let b = connect();
        let ino_b = inode(b);
        check(libc::dup2(b, f) as isize, f as isize, "dup2 socket");
        writes(f, 6, 5);
        // close_range over F, then /dev/null on F: not counted.
        check(
            libc::syscall(libc::SYS_close_range, f, f, 0) as isize,
            0,
            "close_range",
        );
        check(open_null() as isize, f as isize, "/dev/null takes F again");
        writes(f, 7, 64);
        println!("done {f} {ino_a} {ino_c} {ino_b}");
    }
    std::io::stdout().flush().unwrap();
    smp_tests::wait_for_stdin_close();
}
