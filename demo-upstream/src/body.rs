//! Request body collection (bounded, with trailers) and the chunked, paced response body.

use std::convert::Infallible;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming};
use tokio::sync::mpsc;

/// Largest request body accepted, in bytes.
pub const MAX_BODY_BYTES: usize = 64 << 20;

/// Why a request body could not be read completely.
#[derive(Debug)]
pub enum ReadError {
    /// The body exceeds the limit; the bytes up to the limit were kept.
    TooLarge,
    /// The connection failed while reading.
    Transport(String),
}

/// A collected request body.
#[derive(Debug, Default)]
pub struct Collected {
    pub data: Vec<u8>,
    pub trailers: Vec<(String, Vec<u8>)>,
    pub error: Option<ReadError>,
}

/// Reads `body` up to `limit` bytes, collecting trailers.
pub async fn read(mut body: Incoming, limit: usize) -> Collected {
    let mut out = Collected::default();
    while let Some(frame) = body.frame().await {
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                out.error = Some(ReadError::Transport(e.to_string()));
                break;
            }
        };
        match frame.into_data() {
            Ok(data) => {
                let room = limit.saturating_sub(out.data.len());
                if data.len() > room {
                    out.data.extend_from_slice(data.get(..room).unwrap_or(&[]));
                    out.error = Some(ReadError::TooLarge);
                    break;
                }
                out.data.extend_from_slice(&data);
            }
            Err(frame) => {
                if let Ok(trailers) = frame.into_trailers() {
                    out.trailers.extend(
                        trailers
                            .iter()
                            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec())),
                    );
                }
            }
        }
    }
    out
}

/// A response body fed by a background task through a bounded channel.
pub struct Paced {
    rx: mpsc::Receiver<Bytes>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|next| next.map(|data| Ok(Frame::data(data))))
    }
}

/// Streams `data` in pieces of `chunk_size` bytes (0 = one piece) with `delay` between pieces.
/// The feeding task stops as soon as the client goes away.
pub fn paced(data: Bytes, chunk_size: usize, delay: Duration) -> Paced {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let size = if chunk_size == 0 {
            data.len().max(1)
        } else {
            chunk_size
        };
        let mut offset = 0usize;
        while offset < data.len() {
            let end = offset.saturating_add(size).min(data.len());
            if offset > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(data.slice(offset..end)).await.is_err() {
                return;
            }
            offset = end;
        }
    });
    Paced { rx }
}
