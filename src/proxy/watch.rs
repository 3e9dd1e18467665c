//! Watching a client socket for a disconnect while its request is in flight.

use monoio::buf::IoBufMut;
use monoio::io::{CancelableAsyncReadRent, Canceller};

use crate::server::conn::ClientReader;
use crate::timer::Timer;

/// How long a proxied request runs before its client socket is watched for a disconnect.
const WATCH_AFTER: std::time::Duration = std::time::Duration::from_millis(20);

/// Runs `fut` while watching the client socket. A client that disconnects cancels the request:
/// `fut` is dropped, which closes the upstream connection. Bytes the client sends meanwhile
/// (a pipelined request) are kept.
///
/// The watch (a cancelable read, then its cancellation) costs two I/O operations, which is
/// a fifth of a short request's kernel time; it is armed only once the request has run for
/// [`WATCH_AFTER`], which short requests never reach and long ones hardly notice.
pub(super) async fn watch_client<F: std::future::Future<Output = bool>>(
    r: &mut ClientReader,
    delay: &Timer,
    fut: F,
) -> Option<bool> {
    let mut fut = std::pin::pin!(fut);
    // The request is polled before the delay. When both are ready (the answer's last write
    // completed and the client, having read it, closed), the request has finished and must
    // count as answered, not as a client that left (499).
    if let Ok(keep) = delay.run_for(WATCH_AFTER, &mut fut).await {
        return Some(keep);
    }
    if r.buf.capacity() - r.buf.len() < 1024 {
        r.buf.reserve(4096);
    }
    let canceller = Canceller::new();
    let buf = std::mem::take(&mut r.buf);
    let len = buf.len();
    let watch =
        r.rd.cancelable_read(buf.slice_mut(len..), canceller.handle());
    let mut watch = std::pin::pin!(watch);
    let mut fut = std::pin::pin!(fut);
    monoio::select! {
        biased;
        keep = &mut fut => {
            canceller.cancel();
            let (res, slice) = watch.await;
            r.buf = slice.into_inner();
            if matches!(res, Ok(0)) {
                r.eof = true;
            }
            Some(keep)
        }
        (res, slice) = &mut watch => {
            r.buf = slice.into_inner();
            match res {
                Ok(n) if n > 0 => Some(fut.await),
                _ => {
                    r.eof = true;
                    None
                }
            }
        }
    }
}
