//! Framing: each message is a length-delimited JSON document (tokio-util's codec, 4-byte
//! big-endian length), at most [`MAX_FRAME_BYTES`].

use futures::{SinkExt, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_util::codec::{FramedRead, FramedWrite, LengthDelimitedCodec};

/// Large enough for a spec with a privacy notice and a long consent list; small enough that a
/// confused peer cannot make the other side allocate much.
pub const MAX_FRAME_BYTES: usize = 4 << 20;

fn codec() -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder().max_frame_length(MAX_FRAME_BYTES).new_codec()
}

#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("the connection closed")]
    Closed,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("malformed message: {0}")]
    Malformed(#[from] serde_json::Error),
}

pub async fn write_frame<W: AsyncWrite + Unpin, T: Serialize>(w: W, message: &T) -> Result<(), WireError> {
    let bytes = serde_json::to_vec(message)?;
    let mut framed = FramedWrite::new(w, codec());
    framed.send(bytes::Bytes::from(bytes)).await?;
    Ok(())
}

pub async fn read_frame<R: AsyncRead + Unpin, T: DeserializeOwned>(r: R) -> Result<T, WireError> {
    let mut framed = FramedRead::new(r, codec());
    let frame = framed.next().await.ok_or(WireError::Closed)??;
    Ok(serde_json::from_slice(&frame)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn frames_round_trip_and_oversized_ones_are_refused() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (_ar, aw) = tokio::io::split(a);
        let (br, _bw) = tokio::io::split(b);
        write_frame(aw, &serde_json::json!({"op": "hello"})).await.unwrap();
        let v: serde_json::Value = read_frame(br).await.unwrap();
        assert_eq!(v["op"], "hello");

        let (a, b) = tokio::io::duplex(1 << 16);
        let (_ar, mut aw) = tokio::io::split(a);
        let (br, _bw) = tokio::io::split(b);
        use tokio::io::AsyncWriteExt;
        aw.write_all(&((MAX_FRAME_BYTES as u32) + 1).to_be_bytes()).await.unwrap();
        let r: Result<serde_json::Value, _> = read_frame(br).await;
        assert!(matches!(r, Err(WireError::Io(_))), "{r:?}");
    }
}
