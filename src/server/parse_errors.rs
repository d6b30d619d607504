//! JSON bodies for the answers hyper's HTTP/1 parser gives on its own.
//!
//! When a request head cannot be parsed (a malformed request line or header, an
//! invalid Content-Length, a head over `server.max_header_bytes`), hyper answers
//! before any handler runs, with the status alone: `400`, `414` or `431`, the
//! headers `connection: close`, `content-length: 0` and `date`, and no body. It has
//! no hook for that answer, so [`ParseErrors`] sits between hyper and the socket
//! and replaces exactly that answer with the daemon's error shape,
//! `{"error": {"code", "message"}}`. Answers of the router never match: they all
//! carry a Content-Type.
//!
//! The check costs one prefix comparison per write.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// A socket whose writes pass through, except hyper's own parse-error answer,
/// which is rewritten with a JSON body.
pub struct ParseErrors<S> {
    inner: S,
    max_header_bytes: usize,
    /// A rewritten answer not yet written in full, and how much of it is.
    pending: Vec<u8>,
    written: usize,
}

impl<S> ParseErrors<S> {
    pub fn new(inner: S, max_header_bytes: usize) -> ParseErrors<S> {
        ParseErrors {
            inner,
            max_header_bytes,
            pending: Vec::new(),
            written: 0,
        }
    }
}

impl<S: AsyncWrite + Unpin> ParseErrors<S> {
    /// Writes what is left of a rewritten answer.
    fn poll_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.written < self.pending.len() {
            let n =
                ready!(Pin::new(&mut self.inner).poll_write(cx, &self.pending[self.written..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.written += n;
        }
        self.pending = Vec::new();
        self.written = 0;
        Poll::Ready(Ok(()))
    }

    /// Takes `buf` in place of hyper's answer when it is one: the rewritten
    /// answer is written from the next poll on (hyper flushes right after), and
    /// the bytes of hyper's head count as written.
    fn take_parse_error(&mut self, buf: &[u8]) -> Option<usize> {
        let (consumed, answer) = rewrite(buf, self.max_header_bytes)?;
        self.pending = answer;
        self.written = 0;
        Some(consumed)
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for ParseErrors<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for ParseErrors<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        if let Some(consumed) = this.take_parse_error(buf) {
            return Poll::Ready(Ok(consumed));
        }
        Pin::new(&mut this.inner).poll_write(cx, buf)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        // hyper writes a head as the first slice of its own.
        if let Some(first) = bufs.iter().find(|b| !b.is_empty()) {
            if let Some(consumed) = this.take_parse_error(first) {
                return Poll::Ready(Ok(consumed));
            }
        }
        Pin::new(&mut this.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        ready!(this.poll_pending(cx))?;
        Pin::new(&mut this.inner).poll_shutdown(cx)
    }
}

/// When `buf` starts with hyper's parse-error answer, returns the length of that
/// answer and the JSON answer to send instead.
fn rewrite(buf: &[u8], max_header_bytes: usize) -> Option<(usize, Vec<u8>)> {
    let (status, code, message) = if buf.starts_with(b"HTTP/1.1 400 ") {
        (
            "400 Bad Request",
            "malformed_request",
            "the request is not valid HTTP/1.1: a malformed request line or header, or an \
             invalid Content-Length or Transfer-Encoding; the connection is closed"
                .to_owned(),
        )
    } else if buf.starts_with(b"HTTP/1.1 414 ") {
        (
            "414 URI Too Long",
            "uri_too_long",
            "the request target is too long; the connection is closed".to_owned(),
        )
    } else if buf.starts_with(b"HTTP/1.1 431 ") {
        (
            "431 Request Header Fields Too Large",
            "header_too_large",
            format!(
                "the request head is over server.max_header_bytes ({max_header_bytes} bytes) \
                 or has more than 100 headers; the connection is closed"
            ),
        )
    } else {
        return None;
    };
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")? + 4;
    let head = std::str::from_utf8(&buf[..end]).ok()?.to_ascii_lowercase();
    if head.contains("\r\ncontent-type:") || !head.contains("\r\ncontent-length: 0\r\n") {
        return None;
    }
    let body = serde_json::json!({"error": {"code": code, "message": message}}).to_string();
    let answer = format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\nconnection: close\r\n\
         content-length: {}\r\n\r\n{body}",
        body.len()
    );
    Some((end, answer.into_bytes()))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;

    const HYPER_431: &[u8] =
        b"HTTP/1.1 431 Request Header Fields Too Large\r\nconnection: close\r\n\
content-length: 0\r\ndate: Wed, 02 Dec 2026 19:36:47 GMT\r\n\r\n";

    /// The head and the JSON body of one answer whose Content-Length is right.
    pub(in crate::server) fn parts(answer: &[u8]) -> (String, serde_json::Value) {
        let text = std::str::from_utf8(answer).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        let length: usize = head
            .lines()
            .find_map(|l| l.strip_prefix("content-length: "))
            .unwrap()
            .parse()
            .unwrap();
        assert_eq!(body.len(), length);
        (head.to_owned(), serde_json::from_str(body).unwrap())
    }

    #[test]
    fn hypers_own_answer_is_rewritten_with_the_json_shape() {
        let (consumed, answer) = rewrite(HYPER_431, 32_768).unwrap();
        assert_eq!(consumed, HYPER_431.len());
        let (head, body) = parts(&answer);
        assert!(head.starts_with("HTTP/1.1 431 "), "{head}");
        assert!(head.contains("content-type: application/json"));
        assert_eq!(body["error"]["code"], "header_too_large");
        assert!(body["error"]["message"]
            .as_str()
            .unwrap()
            .contains("32768 bytes"));
        let hyper_400 =
            b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\ncontent-length: 0\r\n\r\n";
        let (_, answer) = rewrite(hyper_400, 32_768).unwrap();
        assert_eq!(parts(&answer).1["error"]["code"], "malformed_request");
    }

    #[test]
    fn the_routers_answers_pass_untouched() {
        let router_400 = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n\
content-length: 0\r\n\r\n";
        assert!(
            rewrite(router_400, 32_768).is_none(),
            "it has a Content-Type"
        );
        let with_body = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 12\r\n\r\n";
        assert!(rewrite(with_body, 32_768).is_none(), "it has a body");
        assert!(rewrite(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n", 32_768).is_none());
        assert!(rewrite(b"{\"error\": 1}", 32_768).is_none());
        assert!(rewrite(&HYPER_431[..20], 32_768).is_none(), "no whole head");
    }
}
