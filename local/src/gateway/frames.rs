//! Sees websocket frame sizes that tungstenite hides.
//!
//! tungstenite hands over whole messages, but API Gateway limits each frame
//! to 32 KB, and a message of 100 KB in four frames must pass where one of
//! 33 KB in a single frame must not. [`FrameWatcher`] wraps the upgraded
//! socket and reads frame headers as the bytes pass by on their way to
//! tungstenite. For each data message it completes it queues the largest
//! frame payload of that message; the connection pops one entry per data
//! message tungstenite yields. A queue (rather than one cell reset per
//! message) keeps the two in step even when tungstenite reads ahead into the
//! next message before yielding the current one.

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest frame payload of each completed data message, oldest first.
#[derive(Clone, Default)]
pub(crate) struct FrameSizes(Arc<Mutex<VecDeque<u64>>>);

impl FrameSizes {
    fn push(&self, size: u64) {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push_back(size);
    }

    /// The largest frame of the next data message. 0 if none was seen,
    /// which cannot happen for a message tungstenite has read through us.
    pub(crate) fn pop(&self) -> u64 {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop_front()
            .unwrap_or(0)
    }
}

/// Incremental parser of frame headers in a byte stream (RFC 6455 §5.2).
#[derive(Default)]
struct Scanner {
    header: [u8; 14],
    /// Header bytes held so far.
    have: usize,
    /// Payload bytes of the current frame still to skip.
    payload_left: u64,
    /// Largest payload among the frames of the data message in progress.
    message_max: u64,
}

impl Scanner {
    /// Header length once its first two bytes are known.
    fn header_len(&self) -> usize {
        let ext = match self.header[1] & 0x7f {
            126 => 2,
            127 => 8,
            _ => 0,
        };
        let mask = if self.header[1] & 0x80 != 0 { 4 } else { 0 };
        2 + ext + mask
    }

    fn payload_len(&self) -> u64 {
        match self.header[1] & 0x7f {
            126 => u64::from(u16::from_be_bytes([self.header[2], self.header[3]])),
            127 => {
                let mut b = [0u8; 8];
                b.copy_from_slice(&self.header[2..10]);
                u64::from_be_bytes(b)
            }
            n => u64::from(n),
        }
    }

    fn feed(&mut self, mut bytes: &[u8], sizes: &FrameSizes) {
        while !bytes.is_empty() {
            if self.payload_left > 0 {
                let skip = usize::try_from(self.payload_left)
                    .unwrap_or(usize::MAX)
                    .min(bytes.len());
                bytes = &bytes[skip..];
                self.payload_left -= skip as u64;
                continue;
            }
            // Two bytes tell how long the rest of the header is.
            let need = if self.have < 2 { 2 } else { self.header_len() };
            let take = (need - self.have).min(bytes.len());
            self.header[self.have..self.have + take].copy_from_slice(&bytes[..take]);
            self.have += take;
            bytes = &bytes[take..];
            if self.have < need || (need == 2 && self.header_len() > 2) {
                continue;
            }
            self.frame_complete(sizes);
        }
    }

    fn frame_complete(&mut self, sizes: &FrameSizes) {
        let fin = self.header[0] & 0x80 != 0;
        let opcode = self.header[0] & 0x0f;
        let len = self.payload_len();
        // Control frames (opcode 8..15) may sit between the fragments of a
        // data message and are not part of it.
        if opcode < 8 {
            self.message_max = self.message_max.max(len);
            if fin {
                sizes.push(self.message_max);
                self.message_max = 0;
            }
        }
        self.payload_left = len;
        self.have = 0;
    }
}

/// An IO wrapper that watches the frames a peer sends through it.
pub(crate) struct FrameWatcher<T> {
    inner: T,
    scanner: Scanner,
    sizes: FrameSizes,
}

impl<T> FrameWatcher<T> {
    pub(crate) fn new(inner: T, sizes: FrameSizes) -> Self {
        Self {
            inner,
            scanner: Scanner::default(),
            sizes,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for FrameWatcher<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let poll = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            this.scanner.feed(&buf.filled()[before..], &this.sizes);
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for FrameWatcher<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.get_mut().inner).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
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
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client (masked) frame header with `len` payload bytes after it.
    fn frame(fin: bool, opcode: u8, len: usize) -> Vec<u8> {
        let mut out = vec![(if fin { 0x80 } else { 0 }) | opcode];
        if len < 126 {
            out.push(0x80 | len as u8);
        } else if len <= 0xffff {
            out.push(0x80 | 126);
            out.extend_from_slice(&(len as u16).to_be_bytes());
        } else {
            out.push(0x80 | 127);
            out.extend_from_slice(&(len as u64).to_be_bytes());
        }
        out.extend_from_slice(&[1, 2, 3, 4]);
        out.extend(std::iter::repeat_n(0xAA, len));
        out
    }

    fn scan_in_pieces(stream: &[u8], piece: usize) -> Vec<u64> {
        let sizes = FrameSizes::default();
        let mut scanner = Scanner::default();
        for chunk in stream.chunks(piece) {
            scanner.feed(chunk, &sizes);
        }
        let mut out = Vec::new();
        while let Some(s) = sizes.0.lock().expect("lock").pop_front() {
            out.push(s);
        }
        out
    }

    #[test]
    fn reports_the_largest_frame_of_each_message() {
        let mut stream = Vec::new();
        stream.extend(frame(true, 1, 5)); // small text
        stream.extend(frame(false, 1, 200)); // fragmented text...
        stream.extend(frame(true, 9, 3)); // ...a ping in between...
        stream.extend(frame(false, 0, 70_000));
        stream.extend(frame(true, 0, 10)); // ...end
        stream.extend(frame(true, 2, 0)); // empty binary
        for piece in [1, 2, 3, 7, 100, 1 << 20] {
            assert_eq!(
                scan_in_pieces(&stream, piece),
                vec![5, 70_000, 0],
                "piece {piece}"
            );
        }
    }
}
