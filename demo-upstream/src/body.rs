//! Request body collection (bounded, with trailers) and the chunked, paced response body
//! (optionally cut: it then fails, and the connection is aborted after the headers).

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

/// A response body fed by a background task through a bounded channel. A cut body ends with
/// an error, which makes hyper abort the connection (HTTP/1.1) or reset the stream (HTTP/2).
pub struct Paced {
    rx: mpsc::Receiver<Result<Bytes, std::io::Error>>,
}

impl Body for Paced {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.get_mut()
            .rx
            .poll_recv(cx)
            .map(|next| next.map(|r| r.map(Frame::data)))
    }
}

/// Streams `data` in pieces of `chunk_size` bytes (0 = one piece) with `delay` between pieces,
/// cut after `cut` bytes when given (the body then fails instead of ending). The feeding task
/// stops as soon as the client goes away.
pub fn paced(data: Bytes, chunk_size: usize, delay: Duration, cut: Option<usize>) -> Paced {
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        let size = if chunk_size == 0 {
            data.len().max(1)
        } else {
            chunk_size
        };
        let stop = cut.map_or(data.len(), |c| c.min(data.len()));
        let mut offset = 0usize;
        while offset < stop {
            let end = offset.saturating_add(size).min(stop);
            if offset > 0 && !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            if tx.send(Ok(data.slice(offset..end))).await.is_err() {
                return;
            }
            offset = end;
        }
        if cut.is_some() {
            // Let the bytes sent so far reach the client before the connection goes.
            tokio::time::sleep(Duration::from_millis(50)).await;
            let _ = tx
                .send(Err(std::io::Error::other("scripted cut after the headers")))
                .await;
        }
    });
    Paced { rx }
}
