//! Open file descriptors passed between jarfleet's own processes over a unix socket
//! (`SCM_RIGHTS`): how a listening socket moves from the process that bound it to the one that
//! takes its address over, so the address is never closed in between. The third fenced
//! `unsafe` module: taking ownership of a descriptor the kernel has just installed.
//!
//! A message is a few bytes of data (never none: a stream socket carries descriptors with its
//! data) and up to [`MAX_FDS`] descriptors. Received descriptors are owned (closed on drop) and
//! close-on-exec. A message that arrives with more descriptors than that is refused whole, and
//! every descriptor it brought is closed, so nothing leaks.
#![allow(unsafe_code)]

use std::io::{self, IoSlice, IoSliceMut};
use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::net::UnixStream;

use nix::sys::socket::{ControlMessage, ControlMessageOwned, MsgFlags, recvmsg, sendmsg};

/// Descriptors one message carries at most.
pub const MAX_FDS: usize = 64;
/// The most Linux passes in one message (`SCM_MAX_FD`). The receive buffer holds that many, so
/// the kernel never truncates the descriptors a peer sends (a truncated message's descriptors
/// could not even be seen to be closed).
const KERNEL_MAX_FDS: usize = 253;

/// Sends `data` (at least one byte) with `fds`, whole. `sock` must be in blocking mode: a
/// message is never left half sent.
pub fn send(sock: &UnixStream, data: &[u8], fds: &[BorrowedFd<'_>]) -> io::Result<()> {
    let flags = nix::fcntl::fcntl(sock, nix::fcntl::FcntlArg::F_GETFL).map_err(io::Error::from)?;
    if nix::fcntl::OFlag::from_bits_truncate(flags).contains(nix::fcntl::OFlag::O_NONBLOCK) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "descriptors are sent on a blocking socket only (a message must not be left half sent)",
        ));
    }
    if data.is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a message that carries descriptors needs at least one byte of data",
        ));
    }
    if fds.len() > MAX_FDS {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "{} descriptors in one message, at most {MAX_FDS}",
                fds.len()
            ),
        ));
    }
    let raw: Vec<RawFd> = fds.iter().map(|f| f.as_raw_fd()).collect();
    let rights = [ControlMessage::ScmRights(&raw)];
    let cmsgs: &[ControlMessage] = if raw.is_empty() { &[] } else { &rights };
    let sent = loop {
        match sendmsg::<()>(
            sock.as_raw_fd(),
            &[IoSlice::new(data)],
            cmsgs,
            MsgFlags::MSG_NOSIGNAL,
            None,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    // The descriptors went with the first byte; the rest of the data follows plainly.
    if sent < data.len() {
        use std::io::Write;
        (&*sock).write_all(&data[sent..])?;
    }
    Ok(())
}

/// Receives one message into `buf`: how many bytes came (0: the peer closed) and the
/// descriptors that came with them.
pub fn recv(sock: &UnixStream, buf: &mut [u8]) -> io::Result<(usize, Vec<OwnedFd>)> {
    let mut space = nix::cmsg_space!([RawFd; KERNEL_MAX_FDS]);
    let mut iov = [IoSliceMut::new(buf)];
    let msg = loop {
        match recvmsg::<()>(
            sock.as_raw_fd(),
            &mut iov,
            Some(&mut space),
            MsgFlags::MSG_CMSG_CLOEXEC,
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            r => break r.map_err(io::Error::from)?,
        }
    };
    let mut fds = Vec::new();
    for cmsg in msg.cmsgs().map_err(io::Error::from)? {
        if let ControlMessageOwned::ScmRights(raw) = cmsg {
            for fd in raw {
                // SAFETY: the kernel installed `fd` in this process for this very message
                // (SCM_RIGHTS); nothing else in the process knows it, so it is ours to own.
                fds.push(unsafe { OwnedFd::from_raw_fd(fd) });
            }
        }
    }
    if fds.len() > MAX_FDS {
        let came = fds.len();
        drop(fds);
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("a message came with {came} descriptors, more than {MAX_FDS}; none were kept"),
        ));
    }
    Ok((msg.bytes, fds))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::AsFd;

    fn open_fds() -> usize {
        std::fs::read_dir("/proc/self/fd")
            .expect("/proc/self/fd")
            .count()
    }

    #[test]
    fn a_listening_socket_passed_along_keeps_its_address_and_its_queue() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        // A client waits in the backlog while the socket changes hands.
        let mut early = TcpStream::connect(addr).expect("connect before the hand-over");
        send(&a, b"listen", &[listener.as_fd()]).expect("send");
        drop(listener);
        let mut buf = [0u8; 16];
        let (n, mut fds) = recv(&b, &mut buf).expect("recv");
        assert_eq!(&buf[..n], b"listen");
        assert_eq!(fds.len(), 1);
        let taken = TcpListener::from(fds.remove(0));
        assert_eq!(taken.local_addr().expect("addr"), addr);
        let (mut served, _) = taken.accept().expect("the queued client is accepted");
        early.write_all(b"ping").expect("write");
        let mut got = [0u8; 4];
        served.read_exact(&mut got).expect("read");
        assert_eq!(&got, b"ping");
        let flags = nix::fcntl::fcntl(taken.as_fd(), nix::fcntl::FcntlArg::F_GETFD).expect("fcntl");
        assert!(
            nix::fcntl::FdFlag::from_bits_truncate(flags).contains(nix::fcntl::FdFlag::FD_CLOEXEC),
            "a received descriptor is close-on-exec"
        );
    }

    #[test]
    fn long_data_goes_whole_and_a_message_without_data_or_on_a_nonblocking_socket_is_refused() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let data = vec![7u8; 300_000];
        let reader = std::thread::spawn(move || {
            let mut all = Vec::new();
            let mut buf = vec![0u8; 65_536];
            let (n, fds) = recv(&b, &mut buf).expect("recv");
            assert!(fds.is_empty());
            all.extend_from_slice(&buf[..n]);
            let mut rest = &b;
            rest.read_to_end(&mut all).expect("read the rest");
            all
        });
        send(&a, &data, &[]).expect("send");
        drop(a);
        assert_eq!(reader.join().expect("join"), data);
        let (c, _d) = UnixStream::pair().expect("socketpair");
        let err = send(&c, b"", &[]).expect_err("no data");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        c.set_nonblocking(true).expect("nonblocking");
        let err = send(&c, b"x", &[]).expect_err("a nonblocking socket");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);
        assert!(err.to_string().contains("blocking socket only"), "{err}");
    }

    #[test]
    fn too_many_descriptors_are_refused_without_a_leak() {
        let (a, b) = UnixStream::pair().expect("socketpair");
        let files: Vec<std::fs::File> = (0..=MAX_FDS)
            .map(|_| std::fs::File::open("/dev/null").expect("open"))
            .collect();
        let borrowed: Vec<BorrowedFd<'_>> = files.iter().map(|f| f.as_fd()).collect();
        let err = send(&a, b"x", &borrowed).expect_err("over the limit");
        assert_eq!(err.kind(), io::ErrorKind::InvalidInput);

        // Sent past our own check (straight through nix): the receiver refuses it whole.
        let raw: Vec<RawFd> = borrowed.iter().map(|f| f.as_raw_fd()).collect();
        sendmsg::<()>(
            a.as_raw_fd(),
            &[IoSlice::new(b"x")],
            &[ControlMessage::ScmRights(&raw)],
            MsgFlags::empty(),
            None,
        )
        .expect("sendmsg");
        let before = open_fds();
        let mut buf = [0u8; 4];
        let err = recv(&b, &mut buf).expect_err("more than MAX_FDS");
        assert_eq!(err.kind(), io::ErrorKind::InvalidData, "{err}");
        assert_eq!(open_fds(), before, "no received descriptor is left open");
    }
}
