//! TCP_NODELAY on the gRPC socket Terraform talks to, without forking `tf-provider`.
//!
//! `tf-provider` binds its listener and prints the go-plugin handshake line
//! (`1|6|tcp|127.0.0.1:PORT|grpc|CERT`) without setting TCP_NODELAY, so every small gRPC answer
//! waits on Nagle's algorithm and delayed ACKs. On Linux a connection inherits TCP_NODELAY from
//! its listener when the kernel makes it, so the listener must have the option before Terraform
//! connects, which it does only after reading the handshake line.
//!
//! So stdout goes through a pipe. A thread reads the handshake line and finds the listening
//! socket bound to the printed address among the process's descriptors. It sets TCP_NODELAY
//! on that socket, then passes the line, and everything the process prints after it, to the
//! real stdout.

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::os::fd::{AsFd, BorrowedFd, FromRawFd, OwnedFd};

use rustix::net::SocketAddrAny;

/// The address in a go-plugin handshake line.
pub fn handshake_address(line: &str) -> Option<SocketAddr> {
    let mut parts = line.trim_end().split('|');
    let (_core, _proto, network, address) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    (network == "tcp").then(|| address.parse().ok()).flatten()
}

/// Whether `fd` is a listening socket bound to `address`.
fn is_listener_at(fd: BorrowedFd<'_>, address: SocketAddr) -> bool {
    let listening = rustix::net::sockopt::socket_acceptconn(fd).unwrap_or(false);
    let bound = rustix::net::getsockname(fd).ok().and_then(|a: SocketAddrAny| SocketAddr::try_from(a).ok());
    listening && bound == Some(address)
}

/// Sets TCP_NODELAY on this process's listening socket bound to `address`. Returns whether it
/// found one.
pub fn set_nodelay_on_listener(address: SocketAddr) -> bool {
    let Ok(entries) = std::fs::read_dir("/proc/self/fd") else { return false };
    for entry in entries.flatten() {
        let Some(raw) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        // SAFETY: the descriptor is only borrowed for these calls; a stale number fails them.
        let fd = unsafe { BorrowedFd::borrow_raw(raw) };
        if is_listener_at(fd, address) {
            return rustix::net::sockopt::set_tcp_nodelay(fd, true).is_ok();
        }
    }
    false
}

/// Routes stdout through the handshake filter. Call before anything prints and before the
/// async runtime starts. On failure stdout is left as it was (the provider works, only slower).
pub fn intercept_handshake() {
    let Ok(real_stdout) = rustix::io::dup(std::io::stdout().as_fd()) else { return };
    let Ok((reader, writer)) = rustix::pipe::pipe() else { return };
    if rustix::stdio::dup2_stdout(&writer).is_err() {
        return;
    }
    drop(writer);
    std::thread::spawn(move || forward(reader, real_stdout));
}

fn forward(reader: OwnedFd, real_stdout: OwnedFd) {
    // SAFETY: both descriptors are owned and handed to the File that closes them.
    let (reader, mut out) = unsafe {
        use std::os::fd::IntoRawFd;
        (std::fs::File::from_raw_fd(reader.into_raw_fd()), std::fs::File::from_raw_fd(real_stdout.into_raw_fd()))
    };
    let mut lines = BufReader::new(reader);
    let mut first = String::new();
    if lines.read_line(&mut first).is_ok() && !first.is_empty() {
        if let Some(address) = handshake_address(&first) {
            set_nodelay_on_listener(address);
        }
        let _ = out.write_all(first.as_bytes()).and_then(|()| out.flush());
    }
    let _ = std::io::copy(&mut lines, &mut out);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_handshake_line_names_the_address() {
        assert_eq!(handshake_address("1|6|tcp|127.0.0.1:40123|grpc|MIIB\n"), Some("127.0.0.1:40123".parse().unwrap()));
        assert_eq!(handshake_address("1|6|unix|/tmp/x|grpc|"), None);
        assert_eq!(handshake_address("garbage"), None);
    }

    #[test]
    fn the_listener_gets_nodelay_and_connections_inherit_it() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let address = listener.local_addr().unwrap();
        assert!(!rustix::net::sockopt::tcp_nodelay(&listener).unwrap());
        assert!(set_nodelay_on_listener(address));
        assert!(rustix::net::sockopt::tcp_nodelay(&listener).unwrap());
        let _client = std::net::TcpStream::connect(address).unwrap();
        let (accepted, _) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap(), "an accepted connection inherits TCP_NODELAY (Linux)");
    }
}
