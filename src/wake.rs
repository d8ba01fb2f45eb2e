//! Waking the daemon: after a command writes to the store, it sends one datagram to the daemon's
//! socket, so the daemon acts within milliseconds instead of polling the database.
//!
//! The datagram carries nothing: it only means "look at the store". Losing one is harmless for
//! correctness (the store is the truth); if the socket cannot be bound at all (a data directory
//! path longer than a Unix socket path allows), the daemon falls back to checking once a second.

use std::io;
use std::os::unix::net::UnixDatagram;

use crate::datadir::DataDir;

/// Tells a running daemon to look at the store. Best effort, never blocks, never fails.
pub fn notify(data: &DataDir) {
    if let Ok(sock) = UnixDatagram::unbound() {
        let _ = sock.set_nonblocking(true);
        let _ = sock.send_to(b"w", data.socket_path());
    }
}

/// The daemon's end.
pub struct Listener {
    sock: tokio::net::UnixDatagram,
}

impl Listener {
    /// Binds the socket (the caller holds the daemon lock, so a leftover file is stale).
    pub fn bind(data: &DataDir) -> io::Result<Listener> {
        let path = data.socket_path();
        let _ = std::fs::remove_file(&path);
        let sock = tokio::net::UnixDatagram::bind(&path)?;
        Ok(Listener { sock })
    }

    /// Waits for a wake-up, then swallows any others already queued.
    pub async fn recv(&self) {
        let mut buf = [0u8; 16];
        let _ = self.sock.recv(&mut buf).await;
        while self.sock.try_recv(&mut buf).is_ok() {}
    }
}
