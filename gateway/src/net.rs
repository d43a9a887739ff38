//! TCP streams that remember when the kernel received what they read.
//!
//! A frame's latency through the relay starts when its bytes reach the socket, not when a task gets round to
//! reading them: the difference is the wait for a core, and it is what grows first when a process is saturated.
//! With `SO_TIMESTAMPNS` the kernel stamps every segment it receives (wall clock), and `recvmsg` returns the
//! stamp of the last segment a read consumed. [`StampedTcp`] reads that way and leaves the stamp in an
//! [`ArrivalClock`] that the reader of the frames shares: the voice relay's latency histogram and the load tool
//! both start their clocks there.
//!
//! `recvmsg` costs more than `recv` (the message header and its control data cross into and out of the
//! kernel): stamping every read of the relay's sockets took 6–12% more gateway CPU at 700 sessions. So the
//! gateway stamps one read in [`StampedTcp::sampled`]'s `n` and leaves the others undated: its latency histogram
//! is a sample, drawn by read count and so independent of the latencies it measures.

use std::io;
use std::os::fd::AsRawFd as _;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll, ready};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// One read in this many is stamped on the gateway's own sockets (module documentation).
pub const GATEWAY_STAMP_EVERY: u32 = 8;

/// When the kernel received what a [`StampedTcp`]'s last read returned. Clones share the clock.
#[derive(Debug, Clone, Default)]
pub struct ArrivalClock(Arc<AtomicU64>);

impl ArrivalClock {
    /// Nanoseconds since the Unix epoch; `None` when the last read was not stamped (or none was yet).
    pub fn unix_nanos(&self) -> Option<u64> {
        match self.0.load(Ordering::Relaxed) {
            0 => None,
            nanos => Some(nanos),
        }
    }

    /// The same moment on the monotonic clock, for measuring against `Instant::now()`; `None` when the last
    /// read was not stamped. A stamp that would lie in the future (the wall clock was stepped back since) reads
    /// as now.
    pub fn arrived_at(&self) -> Option<Instant> {
        let nanos = self.unix_nanos()?;
        let now = Instant::now();
        let since_epoch = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let age = since_epoch.saturating_sub(Duration::from_nanos(nanos));
        Some(now.checked_sub(age).unwrap_or(now))
    }
}

/// When what was just read from a stream arrived: its clock's stamp (`None` for an undated read), or now for a
/// stream without a clock (no socket to wait in, or one not served through [`StampedTcp`]).
pub fn arrival(clock: Option<&ArrivalClock>) -> Option<Instant> {
    clock.map_or_else(|| Some(Instant::now()), ArrivalClock::arrived_at)
}

/// A TCP stream whose reads record their kernel receive time in an [`ArrivalClock`] (every read, or one in
/// `n`). A read that returns several frames gives them all the time of its last segment, so the earlier ones'
/// wait can only be understated.
#[derive(Debug)]
pub struct StampedTcp {
    inner: TcpStream,
    clock: ArrivalClock,
    /// Space for one timestamp control message.
    control: Vec<u8>,
    /// Every how many reads one is stamped.
    stamp_every: u32,
    /// Reads completed so far (wrapping).
    reads: u32,
}

impl StampedTcp {
    /// Stamps every read of `inner`. Where the kernel cannot stamp, reads still work and the clock stays
    /// unknown.
    pub fn new(inner: TcpStream) -> Self {
        Self::sampled(inner, 1)
    }

    /// Stamps the first read of `inner` and then one in `n`; the others leave the clock unknown.
    pub fn sampled(inner: TcpStream, n: u32) -> Self {
        use nix::sys::socket::{setsockopt, sockopt::ReceiveTimestampns};
        if let Err(error) = setsockopt(&inner, ReceiveTimestampns, &true) {
            tracing::debug!(%error, "no kernel receive timestamps on this socket");
        }
        StampedTcp {
            inner,
            clock: ArrivalClock::default(),
            control: nix::cmsg_space!(nix::sys::time::TimeSpec),
            stamp_every: n.max(1),
            reads: 0,
        }
    }

    /// The clock this stream's reads set.
    pub fn clock(&self) -> ArrivalClock {
        self.clock.clone()
    }
}

impl AsyncRead for StampedTcp {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let polled = if this.reads.is_multiple_of(this.stamp_every) {
            this.poll_read_stamped(cx, buf)
        } else {
            let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
            if polled.is_ready() {
                this.clock.0.store(0, Ordering::Relaxed);
            }
            polled
        };
        if polled.is_ready() {
            this.reads = this.reads.wrapping_add(1);
        }
        polled
    }
}

impl StampedTcp {
    /// A read with `recvmsg`, leaving the kernel's receive stamp of what it returned in the clock.
    fn poll_read_stamped(
        &mut self,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        use nix::sys::socket::{ControlMessageOwned, MsgFlags, recvmsg};
        let StampedTcp {
            inner,
            clock,
            control,
            ..
        } = self;
        loop {
            ready!(inner.poll_read_ready(cx))?;
            let fd = inner.as_raw_fd();
            let unfilled = buf.initialize_unfilled();
            let read = inner.try_io(tokio::io::Interest::READABLE, || {
                let mut iov = [io::IoSliceMut::new(unfilled)];
                let message = recvmsg::<()>(fd, &mut iov, Some(control), MsgFlags::empty())?;
                let mut stamp = None;
                for cmsg in message.cmsgs()? {
                    if let ControlMessageOwned::ScmTimestampns(at) = cmsg {
                        stamp = u64::try_from(at.tv_sec())
                            .ok()
                            .zip(u64::try_from(at.tv_nsec()).ok())
                            .map(|(secs, nanos)| secs * 1_000_000_000 + nanos);
                    }
                }
                Ok((message.bytes, stamp))
            });
            match read {
                Ok((bytes, stamp)) => {
                    clock.0.store(stamp.unwrap_or(0), Ordering::Relaxed);
                    buf.advance(bytes);
                    return Poll::Ready(Ok(()));
                }
                Err(error) if error.kind() == io::ErrorKind::WouldBlock => continue,
                Err(error) => return Poll::Ready(Err(error)),
            }
        }
    }
}

impl AsyncWrite for StampedTcp {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

    use super::*;

    /// A connected pair on loopback, the accepted end stamped, once the kernel stamps segments: it turns
    /// receive timestamps on for the whole machine when the first socket asks, a moment later, and segments
    /// received meanwhile carry none.
    async fn pair() -> (TcpStream, StampedTcp) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (accepted, _) = listener.accept().await.unwrap();
        let mut warming = StampedTcp::new(accepted);
        for _ in 0..100 {
            client.write_all(b".").await.unwrap();
            warming.read_exact(&mut [0u8; 1]).await.unwrap();
            if warming.clock().unix_nanos().is_some() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        (client, StampedTcp::new(warming.inner))
    }

    #[tokio::test]
    async fn a_read_is_dated_by_the_kernel_not_by_the_reader() {
        let (mut client, mut stamped) = pair().await;
        let clock = stamped.clock();
        assert_eq!(clock.unix_nanos(), None);

        client.write_all(b"frame").await.unwrap();
        let written = Instant::now();
        // The bytes wait in the socket while the reader is busy elsewhere.
        tokio::time::sleep(Duration::from_millis(60)).await;
        let mut buf = [0u8; 16];
        let n = stamped.read(&mut buf).await.unwrap();
        let read = Instant::now();

        assert_eq!(&buf[..n], b"frame");
        assert!(clock.unix_nanos().is_some(), "no kernel stamp");
        let arrived = clock.arrived_at().unwrap();
        // Arrived right after the write, ~60 ms before the read (loose bounds: a loaded machine).
        assert!(
            read.duration_since(arrived) >= Duration::from_millis(50),
            "waited only {:?} in the socket",
            read.duration_since(arrived)
        );
        assert!(
            arrived.saturating_duration_since(written) < Duration::from_millis(50),
            "arrived {:?} after the write",
            arrived.saturating_duration_since(written)
        );
    }

    #[tokio::test]
    async fn a_sampled_stream_stamps_one_read_in_n() {
        let (mut client, stamped) = pair().await;
        let mut stamped = StampedTcp::sampled(stamped.inner, 3);
        let clock = stamped.clock();
        let mut stamps = Vec::new();
        for _ in 0..7 {
            client.write_all(b".").await.unwrap();
            let mut buf = [0u8; 1];
            stamped.read_exact(&mut buf).await.unwrap();
            stamps.push(clock.arrived_at().is_some());
        }
        assert_eq!(stamps, [true, false, false, true, false, false, true]);
    }

    #[tokio::test]
    async fn writes_pass_through() {
        let (mut client, mut stamped) = pair().await;
        assert_eq!(stamped.clock().arrived_at(), None);

        // hyper writes a response's head and body with one vectored write: both slices go out at once.
        assert!(stamped.is_write_vectored());
        let bufs = [io::IoSlice::new(b"ab"), io::IoSlice::new(b"cd")];
        let n = std::future::poll_fn(|cx| Pin::new(&mut stamped).poll_write_vectored(cx, &bufs))
            .await
            .unwrap();
        assert_eq!(n, 4);
        stamped.flush().await.unwrap();
        let mut echoed = [0u8; 4];
        client.read_exact(&mut echoed).await.unwrap();
        assert_eq!(&echoed, b"abcd");
    }
}
