//! One upstream connection, plain TCP or TLS, with the owned-buffer I/O both share.
//!
//! A connection carries its own read buffer so that bytes read past the end of one response are
//! never lost and the buffer's capacity is reused across requests while pooled.

use std::cell::Cell;
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;
use monoio_rustls::ClientTlsStream;
use rustls::pki_types::ServerName;

use crate::timer::Timer;

/// Initial capacity of a connection's read buffer; grows for large heads, shrinks never.
const READ_BUF_BYTES: usize = 16 * 1024;

pub enum Io {
    Plain(TcpStream),
    Tls(Box<ClientTlsStream<TcpStream>>),
}

pub struct UpConn {
    io: Io,
    /// Bytes read from the upstream and not yet consumed.
    pub buf: Vec<u8>,
    /// Counts this connection among its shard's open connections to the provider.
    pub live: Option<Live>,
    /// The request was not written whole (the upstream answered early and stopped reading):
    /// the connection cannot carry another one.
    pub request_cut: bool,
}

/// One open connection in a per-provider gauge; leaves it when dropped, so every way a
/// connection ends (closed, reaped, broken) is counted.
pub struct Live {
    gauge: Rc<[Cell<u32>]>,
    provider: usize,
}

impl Live {
    pub fn enter(gauge: &Rc<[Cell<u32>]>, provider: usize) -> Option<Live> {
        let cell = gauge.get(provider)?;
        cell.set(cell.get() + 1);
        Some(Live {
            gauge: gauge.clone(),
            provider,
        })
    }
}

impl Drop for Live {
    fn drop(&mut self) {
        let cell = &self.gauge[self.provider];
        cell.set(cell.get().saturating_sub(1));
    }
}

impl UpConn {
    /// Connects to `addr` by `deadline`; performs the TLS handshake when `tls` is given. Runs on
    /// the connection's (cuttable) timer, so a stopping shard ends a slow connect or handshake
    /// like any other upstream wait.
    pub async fn connect(
        addr: SocketAddr,
        tls: Option<(&Arc<rustls::ClientConfig>, &ServerName<'static>)>,
        timer: &Timer,
        deadline: Instant,
    ) -> io::Result<UpConn> {
        let fut = async {
            let tcp = TcpStream::connect_addr(addr).await?;
            // Requests are written in one piece; Nagle would only add latency to the next one.
            let _ = tcp.set_nodelay(true);
            let io = match tls {
                None => Io::Plain(tcp),
                Some((cfg, name)) => {
                    let connector = monoio_rustls::TlsConnector::from(cfg.clone());
                    let s = connector.connect(name.clone(), tcp).await.map_err(|e| {
                        io::Error::new(io::ErrorKind::ConnectionAborted, e.to_string())
                    })?;
                    Io::Tls(Box::new(s))
                }
            };
            Ok::<_, io::Error>(io)
        };
        match timer.run(deadline, fut).await {
            Ok(Ok(io)) => Ok(UpConn {
                io,
                buf: Vec::with_capacity(READ_BUF_BYTES),
                live: None,
                request_cut: false,
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "connect timed out")),
        }
    }

    /// Writes all of `data` and hands the buffer back.
    pub async fn write_all(&mut self, data: Vec<u8>) -> (io::Result<()>, Vec<u8>) {
        let (res, data) = match &mut self.io {
            Io::Plain(s) => s.write_all(data).await,
            // Boxed for the same reason as the TLS read in `read_more`.
            Io::Tls(s) => {
                Box::pin(async move {
                    let (r, d) = s.write_all(data).await;
                    if r.is_ok() {
                        // rustls buffers records; make sure they reach the socket now.
                        let f = monoio::io::AsyncWriteRent::flush(&mut **s).await;
                        (f.map(|_| 0), d)
                    } else {
                        (r, d)
                    }
                })
                .await
            }
        };
        (res.map(|_| ()), data)
    }

    /// Reads more bytes onto the end of `self.buf`; returns how many (0 = EOF).
    pub async fn read_more(&mut self) -> io::Result<usize> {
        if self.buf.capacity() - self.buf.len() < 4096 {
            self.buf.reserve(READ_BUF_BYTES);
        }
        let buf = std::mem::take(&mut self.buf);
        let len = buf.len();
        let (res, slice) = match &mut self.io {
            Io::Plain(s) => s.read(buf.slice_mut(len..)).await,
            // Boxed: the TLS read future is several hundred bytes, and inline it would grow
            // (and be copied with) every plain-TCP request's future too.
            Io::Tls(s) => Box::pin(s.read(buf.slice_mut(len..))).await,
        };
        self.buf = slice.into_inner();
        res
    }

    /// Drops the first `n` bytes of the read buffer (they were consumed).
    pub fn consume(&mut self, n: usize) {
        if n >= self.buf.len() {
            self.buf.clear();
        } else {
            self.buf.drain(..n);
        }
    }
}
