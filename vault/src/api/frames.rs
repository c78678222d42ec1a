//! Response bodies cut into DATA frames that h2 copies into its write
//! buffer, so that a response and its trailers leave in one write.
//!
//! h2 copies a DATA payload of less than 256 bytes into the connection's write
//! buffer but chains a larger one behind it and, while it is chained, takes
//! no further frame: the trailers of the same response (grpc-status) then
//! wait for a write of their own. A gRPC reply of a few hundred bytes (a
//! Detokenize of six fields) so cost two writes. Cutting such a payload into
//! pieces of at most 255 bytes (no copy: they share the payload's buffer)
//! costs 9 bytes of frame header per piece and lets the response and its
//! trailers (and any other response queued on the connection by then) go
//! in a single write: 1.9 socket writes per Detokenize became 0.9 (see
//! docs/performance.md). Payloads above [`CUT_UP_TO`] pass as they are: for
//! them one more write is cheap beside the bytes.

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The largest DATA payload h2 copies rather than chains (one less than
/// its `CHAIN_THRESHOLD` for vectored I/O, which TCP streams have).
pub const PIECE: usize = 255;

/// Payloads longer than this are sent whole.
pub const CUT_UP_TO: usize = 4096;

/// A tower layer whose responses' bodies are [`SmallFrames`].
#[derive(Debug, Clone, Copy, Default)]
pub struct SmallFramesLayer;

impl<S> tower::Layer<S> for SmallFramesLayer {
    type Service = SmallFramesService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        SmallFramesService(inner)
    }
}

/// See [`SmallFramesLayer`].
#[derive(Debug, Clone)]
pub struct SmallFramesService<S>(S);

type Wrap<B> = fn(http::Response<B>) -> http::Response<SmallFrames<B>>;

impl<S, R, B> tower::Service<R> for SmallFramesService<S>
where
    S: tower::Service<R, Response = http::Response<B>>,
{
    type Response = http::Response<SmallFrames<B>>;
    type Error = S::Error;
    type Future = futures::future::MapOk<S::Future, Wrap<B>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.0.poll_ready(cx)
    }

    fn call(&mut self, req: R) -> Self::Future {
        use futures::TryFutureExt;
        let wrap: Wrap<B> = |res| res.map(SmallFrames::new);
        self.0.call(req).map_ok(wrap)
    }
}

/// A body whose DATA frames of more than [`PIECE`] and at most
/// [`CUT_UP_TO`] bytes come out in pieces of at most [`PIECE`] bytes.
#[derive(Debug)]
pub struct SmallFrames<B> {
    inner: B,
    rest: Bytes,
}

impl<B> SmallFrames<B> {
    /// Wraps `inner`.
    pub fn new(inner: B) -> Self {
        Self {
            inner,
            rest: Bytes::new(),
        }
    }

    fn piece(&mut self) -> Bytes {
        let n = self.rest.len().min(PIECE);
        self.rest.split_to(n)
    }
}

impl<B> Body for SmallFrames<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if !this.rest.is_empty() {
            return Poll::Ready(Some(Ok(Frame::data(this.piece()))));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => match frame.into_data() {
                Ok(data) if data.len() > PIECE && data.len() <= CUT_UP_TO => {
                    this.rest = data;
                    Poll::Ready(Some(Ok(Frame::data(this.piece()))))
                }
                Ok(data) => Poll::Ready(Some(Ok(Frame::data(data)))),
                Err(frame) => Poll::Ready(Some(Ok(frame))),
            },
            other => other,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        let mut hint = self.inner.size_hint();
        let rest = u64::try_from(self.rest.len()).unwrap_or(u64::MAX);
        hint.set_lower(hint.lower().saturating_add(rest));
        if let Some(upper) = hint.upper() {
            hint.set_upper(upper.saturating_add(rest));
        }
        hint
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::convert::Infallible;

    /// A body that gives out the frames it was made with.
    struct Frames(VecDeque<Frame<Bytes>>);

    impl Body for Frames {
        type Data = Bytes;
        type Error = Infallible;
        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
            Poll::Ready(self.get_mut().0.pop_front().map(Ok))
        }
        fn is_end_stream(&self) -> bool {
            self.0.is_empty()
        }
    }

    fn payload(len: usize, seed: u8) -> Bytes {
        (0..len)
            .map(|i| (i % 251) as u8 ^ seed)
            .collect::<Vec<u8>>()
            .into()
    }

    /// Every frame of `body`, and whether it said it had ended after each.
    fn drain(mut body: SmallFrames<Frames>) -> Vec<(Frame<Bytes>, bool)> {
        let waker = futures::task::noop_waker();
        let mut cx = Context::from_waker(&waker);
        let mut out = Vec::new();
        while let Poll::Ready(Some(Ok(frame))) = Pin::new(&mut body).poll_frame(&mut cx) {
            out.push((frame, body.is_end_stream()));
        }
        assert!(body.is_end_stream());
        out
    }

    #[test]
    fn payloads_up_to_the_limit_come_out_in_pieces_h2_copies_and_nothing_is_lost() {
        let lens = [
            0,
            1,
            PIECE,
            PIECE + 1,
            700,
            CUT_UP_TO,
            CUT_UP_TO + 1,
            40_000,
        ];
        let mut trailers = http::HeaderMap::new();
        trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
        let mut frames: VecDeque<_> = lens
            .iter()
            .enumerate()
            .map(|(i, &len)| Frame::data(payload(len, i as u8)))
            .collect();
        frames.push_back(Frame::trailers(trailers.clone()));
        let out = drain(SmallFrames::new(Frames(frames)));

        let mut i = 0;
        for (n, &len) in lens.iter().enumerate() {
            let mut got = Vec::new();
            let mut pieces = 0;
            while got.len() < len || (len == 0 && pieces == 0) {
                let (frame, ended) = &out[i];
                let data = frame.data_ref().map(|d| d.to_vec()).unwrap_or_default();
                assert!(!ended, "the body ended inside payload {n}");
                if len > PIECE && len <= CUT_UP_TO {
                    assert!(
                        data.len() <= PIECE,
                        "payload {n}: a piece of {}",
                        data.len()
                    );
                } else {
                    assert_eq!(data.len(), len, "payload {n} was cut");
                }
                got.extend_from_slice(&data);
                pieces += 1;
                i += 1;
            }
            assert_eq!(got, payload(len, n as u8).to_vec(), "payload {n} changed");
            assert_eq!(
                pieces,
                if len > PIECE && len <= CUT_UP_TO {
                    len.div_ceil(PIECE)
                } else {
                    1
                }
            );
        }
        let (last, ended) = &out[i];
        assert_eq!(last.trailers_ref(), Some(&trailers));
        assert!(ended);
        assert_eq!(out.len(), i + 1);
    }
}
