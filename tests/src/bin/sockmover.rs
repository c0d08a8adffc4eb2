//! Test workload: moves a known number of bytes over a loopback TCP pair, in a known number
//! of calls of each traced syscall, and does some non-socket I/O that must not be counted.
//!
//! Prints `ready <fd_a> <fd_b>`, waits for a line on stdin, runs the plan (see `EXPECTED` in
//! tests/tests/probes.rs), prints `done`, then waits for stdin to close.

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
