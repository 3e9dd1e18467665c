//! Socket helpers of the mock: owned-buffer reads and writes, holding a connection in
//! silence, and closing with a reset.

use std::os::fd::AsRawFd;
use std::time::Duration;

use monoio::buf::IoBufMut;
use monoio::io::{AsyncReadRent, AsyncWriteRentExt};
use monoio::net::TcpStream;

/// How long a silent or stalled answer holds the connection if the client never closes it.
const HOLD_MAX: Duration = Duration::from_secs(3600);

/// Closes with RST instead of FIN: SO_LINGER on with a zero timeout, then close.
pub fn reset(s: &TcpStream) {
    let linger = libc::linger {
        l_onoff: 1,
        l_linger: 0,
    };
    // SAFETY: a valid socket fd owned by `s`, and a correctly sized linger struct.
    unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_LINGER,
            (&linger as *const libc::linger).cast(),
            std::mem::size_of::<libc::linger>() as libc::socklen_t,
        );
    }
}

/// Says nothing more until the client closes (or [`HOLD_MAX`] passes).
pub async fn hold(s: &mut TcpStream) {
    let mut buf = Vec::with_capacity(4096);
    let _ = monoio::time::timeout(HOLD_MAX, async {
        loop {
            buf.clear();
            if !read(s, &mut buf).await {
                return;
            }
        }
    })
    .await;
}

pub async fn read(s: &mut TcpStream, buf: &mut Vec<u8>) -> bool {
    if buf.capacity() - buf.len() < 4096 {
        buf.reserve(16 * 1024);
    }
    let b = std::mem::take(buf);
    let len = b.len();
    let (res, slice) = s.read(b.slice_mut(len..)).await;
    *buf = slice.into_inner();
    matches!(res, Ok(n) if n > 0)
}

pub async fn write(s: &mut TcpStream, out: &mut Vec<u8>) -> bool {
    let data = std::mem::take(out);
    let (res, mut data) = s.write_all(data).await;
    data.clear();
    *out = data;
    res.is_ok()
}
