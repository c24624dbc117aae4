//! The request body sent upstream: the client's, streamed, or held whole when it is
//! small enough to send a second time (a retry after the keep-alive race, or the
//! shield's retry on stable).
//!
//! A body is *replayable* when it is empty or buffered whole. Buffering is bounded: a
//! body larger than the cap (or of unknown length that turns out larger) keeps the
//! bytes read so far as a prefix and streams the rest, and is never retried.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use hyper::body::Incoming;

/// A request body on its way upstream.
#[derive(Debug)]
pub enum RequestBody {
    /// No body (GET, HEAD, …: most requests).
    Empty,
    /// The whole body, held in memory; sent as many times as needed.
    Full(Option<Bytes>),
    /// The client's body, streamed as it arrives; sent once.
    Streaming(Incoming),
    /// The first chunks of a body that outgrew the buffering cap (or carried
    /// trailers), then the rest, streamed; sent once. Boxed: it is rare, and every
    /// request moves its `RequestBody` through several layers (168 → 48 bytes).
    Prefixed(Box<Prefixed>),
}

/// See [`RequestBody::Prefixed`].
#[derive(Debug)]
pub struct Prefixed {
    head: VecDeque<Bytes>,
    /// Trailers already read from `rest`, sent after `head`.
    trailers: Option<http::HeaderMap>,
    rest: Incoming,
}

// === impl RequestBody ===

impl RequestBody {
    /// The client's body as is: empty when it says so, else streamed.
    pub fn streaming(body: Incoming) -> RequestBody {
        if body.is_end_stream() {
            RequestBody::Empty
        } else {
            RequestBody::Streaming(body)
        }
    }

    /// Reads `body` whole if it is at most `cap` bytes, so it can be sent again. A body
    /// that declares more (Content-Length) is not read at all; one that turns out
    /// larger keeps what was read as a prefix. Trailers make a body non-replayable
    /// (they are rare on requests, and dropping them would change the request).
    /// Errors are the client's (it aborted its body).
    pub async fn buffered(body: Incoming, cap: usize) -> Result<RequestBody, hyper::Error> {
        if body.is_end_stream() {
            return Ok(RequestBody::Empty);
        }
        if body.size_hint().lower() > cap as u64 {
            return Ok(RequestBody::Streaming(body));
        }
        let mut body = body;
        let mut head = VecDeque::new();
        let mut len = 0usize;
        loop {
            if body.is_end_stream() {
                break;
            }
            let Some(frame) = body.frame().await else {
                break;
            };
            let frame = frame?;
            match frame.into_data() {
                Ok(data) => {
                    len += data.len();
                    head.push_back(data);
                    if len > cap {
                        return Ok(RequestBody::Prefixed(Box::new(Prefixed {
                            head,
                            trailers: None,
                            rest: body,
                        })));
                    }
                }
                Err(frame) => {
                    // Trailers: sent on after the data, never replayed.
                    return Ok(RequestBody::Prefixed(Box::new(Prefixed {
                        head,
                        trailers: frame.into_trailers().ok(),
                        rest: body,
                    })));
                }
            }
        }
        Ok(match head.len() {
            0 => RequestBody::Empty,
            1 => RequestBody::Full(head.pop_front()),
            _ => {
                let mut whole = bytes::BytesMut::with_capacity(len);
                for chunk in head {
                    whole.extend_from_slice(&chunk);
                }
                RequestBody::Full(Some(whole.freeze()))
            }
        })
    }

    /// A copy to send again, if this body can be: empty or held whole.
    pub fn try_clone(&self) -> Option<RequestBody> {
        match self {
            RequestBody::Empty => Some(RequestBody::Empty),
            RequestBody::Full(bytes) => Some(RequestBody::Full(bytes.clone())),
            RequestBody::Streaming(_) | RequestBody::Prefixed(_) => None,
        }
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        // Every variant is Unpin (Incoming is), so no projection is needed.
        match self.get_mut() {
            RequestBody::Empty => Poll::Ready(None),
            RequestBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            RequestBody::Streaming(body) => Pin::new(body).poll_frame(cx),
            RequestBody::Prefixed(prefixed) => {
                match (prefixed.head.pop_front(), prefixed.trailers.take()) {
                    (Some(chunk), trailers_left) => {
                        prefixed.trailers = trailers_left;
                        Poll::Ready(Some(Ok(Frame::data(chunk))))
                    }
                    (None, Some(trailers)) => Poll::Ready(Some(Ok(Frame::trailers(trailers)))),
                    (None, None) => Pin::new(&mut prefixed.rest).poll_frame(cx),
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            RequestBody::Empty => true,
            RequestBody::Full(bytes) => bytes.is_none(),
            RequestBody::Streaming(body) => body.is_end_stream(),
            RequestBody::Prefixed(prefixed) => {
                prefixed.head.is_empty()
                    && prefixed.trailers.is_none()
                    && prefixed.rest.is_end_stream()
            }
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            RequestBody::Empty => SizeHint::with_exact(0),
            RequestBody::Full(bytes) => {
                SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64))
            }
            RequestBody::Streaming(body) => body.size_hint(),
            RequestBody::Prefixed(prefixed) => {
                let buffered: u64 = prefixed.head.iter().map(|b| b.len() as u64).sum();
                let rest = prefixed.rest.size_hint();
                let mut hint = SizeHint::new();
                hint.set_lower(buffered + rest.lower());
                if let Some(upper) = rest.upper() {
                    hint.set_upper(buffered + upper);
                }
                hint
            }
        }
    }
}
