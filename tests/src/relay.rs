//! A TCP relay that can freeze, to make half-open links in end-to-end tests.
//!
//! A frozen relay keeps both sockets of every connection open but forwards nothing more, in
//! either direction, and never passes on a close: to each end the link looks exactly like one
//! whose peer host vanished (no FIN, no RST). Only an application-level keep-alive notices.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// A running relay from [`Relay::addr`] to an upstream address.
pub struct Relay {
    addr: SocketAddr,
    frozen: Arc<AtomicBool>,
    stop: CancellationToken,
}

impl Relay {
    /// Listens on a free loopback port and relays every connection to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Relay> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let frozen = Arc::new(AtomicBool::new(false));
        let stop = CancellationToken::new();
        let (f, s) = (frozen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = s.cancelled() => return,
                    a = listener.accept() => a,
                };
                let Ok((down, _)) = accepted else { continue };
                let Ok(up) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (down_r, down_w) = down.into_split();
                let (up_r, up_w) = up.into_split();
                tokio::spawn(pipe(down_r, up_w, f.clone(), s.clone()));
                tokio::spawn(pipe(up_r, down_w, f.clone(), s.clone()));
            }
        });
        Ok(Relay { addr, frozen, stop })
    }

    /// The address to dial instead of the upstream.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// From now on nothing is forwarded and no socket is closed until the relay is dropped.
    pub fn freeze(&self) {
        self.frozen.store(true, Ordering::SeqCst);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Copies `from` to `to` until either ends, or holds both open, silent, once `frozen` is set.
async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    frozen: Arc<AtomicBool>,
    stop: CancellationToken,
) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = tokio::select! {
            _ = stop.cancelled() => return,
            // A read error ends the pipe like a close does.
            r = from.read(&mut buf) => r.unwrap_or(0),
        };
        if frozen.load(Ordering::SeqCst) {
            // Swallow these bytes and pass on neither data nor a close: a half-open link.
            stop.cancelled().await;
            return;
        }
        if n == 0 || to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
