//! Framing: every message is a postcard payload preceded by its length as a
//! 4-byte big-endian integer, and no frame may exceed a maximum size.
//!
//! The decision logic ([`FrameDecoder`], [`encode`], [`decode`]) is pure: bytes
//! in, frames or errors out. [`read_message`] and [`write_message`] are the thin
//! async layer used on QUIC streams.

use serde::{Serialize, de::DeserializeOwned};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Default maximum frame size: large enough for a template folder, small enough
/// that a hostile peer cannot make us allocate much. Image chunks are smaller.
pub const DEFAULT_MAX_FRAME: usize = 8 * 1024 * 1024;

/// Size of the length prefix.
pub const LEN_PREFIX: usize = 4;

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes exceeds the maximum frame size of {max} bytes")]
    TooLarge { len: usize, max: usize },
    #[error("stream ended in the middle of a frame ({got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    #[error("malformed message ({what})")]
    Malformed {
        what: &'static str,
        #[source]
        source: postcard::Error,
    },
    #[error("could not encode message")]
    Encode(#[source] postcard::Error),
    #[error("stream i/o")]
    Io(#[source] std::io::Error),
}

/// Encodes `msg` as one frame (length prefix + postcard payload).
pub fn encode<T: Serialize>(msg: &T, max: usize) -> Result<Vec<u8>, FrameError> {
    let mut out = postcard::to_extend(msg, vec![0u8; LEN_PREFIX]).map_err(FrameError::Encode)?;
    let len = out.len() - LEN_PREFIX;
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let prefix = u32::try_from(len).map_err(|_| FrameError::TooLarge { len, max })?;
    out[..LEN_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(out)
}

/// Decodes one payload (without its length prefix) as `T`. Trailing bytes are an error:
/// a payload that is longer than the message means the peer sent another type.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let (msg, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|source| FrameError::Malformed {
            what: std::any::type_name::<T>(),
            source,
        })?;
    if !rest.is_empty() {
        return Err(FrameError::Malformed {
            what: std::any::type_name::<T>(),
            source: postcard::Error::DeserializeBadEncoding,
        });
    }
    Ok(msg)
}

/// Reads only the leading protocol version of a first message. Every first
/// message of a connection starts with `version: u32`, so this works whatever
/// the rest of the message is, even from a newer peer.
pub fn peek_version(payload: &[u8]) -> Result<u32, FrameError> {
    postcard::take_from_bytes::<u32>(payload)
        .map(|(v, _)| v)
        .map_err(|source| FrameError::Malformed {
            what: "protocol version",
            source,
        })
}

/// Incremental, I/O-free frame decoder: push bytes in, take whole frames out.
#[derive(Debug)]
pub struct FrameDecoder {
    max: usize,
    buf: Vec<u8>,
}

impl FrameDecoder {
    pub fn new(max: usize) -> Self {
        Self {
            max,
            buf: Vec::new(),
        }
    }

    /// Appends received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Returns the next complete frame's payload, `Ok(None)` if more bytes are
    /// needed, or an error as soon as the announced length exceeds the maximum.
    pub fn next_frame(&mut self) -> Result<Option<Vec<u8>>, FrameError> {
        if self.buf.len() < LEN_PREFIX {
            return Ok(None);
        }
        let len = frame_len(&self.buf[..LEN_PREFIX]);
        if len > self.max {
            return Err(FrameError::TooLarge { len, max: self.max });
        }
        if self.buf.len() < LEN_PREFIX + len {
            return Ok(None);
        }
        let payload = self.buf[LEN_PREFIX..LEN_PREFIX + len].to_vec();
        self.buf.drain(..LEN_PREFIX + len);
        Ok(Some(payload))
    }

    /// Call at end of stream: an error if a partial frame is left over.
    pub fn finish(&self) -> Result<(), FrameError> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let expected = if self.buf.len() >= LEN_PREFIX {
            LEN_PREFIX + frame_len(&self.buf[..LEN_PREFIX])
        } else {
            LEN_PREFIX
        };
        Err(FrameError::Truncated {
            got: self.buf.len(),
            expected,
        })
    }
}

/// Reads one frame's payload. `Ok(None)` on a clean end of stream before any byte
/// of a new frame; an error on a partial frame or an oversized length.
pub async fn read_frame<R: AsyncRead + Unpin>(
    recv: &mut R,
    max: usize,
) -> Result<Option<Vec<u8>>, FrameError> {
    let mut prefix = [0u8; LEN_PREFIX];
    let mut got = 0;
    while got < LEN_PREFIX {
        let n = recv
            .read(&mut prefix[got..])
            .await
            .map_err(FrameError::Io)?;
        if n == 0 {
            if got == 0 {
                return Ok(None);
            }
            return Err(FrameError::Truncated {
                got,
                expected: LEN_PREFIX,
            });
        }
        got += n;
    }
    let len = frame_len(&prefix);
    if len > max {
        return Err(FrameError::TooLarge { len, max });
    }
    let mut payload = vec![0u8; len];
    let mut got = 0;
    while got < len {
        let n = recv
            .read(&mut payload[got..])
            .await
            .map_err(FrameError::Io)?;
        if n == 0 {
            return Err(FrameError::Truncated {
                got: LEN_PREFIX + got,
                expected: LEN_PREFIX + len,
            });
        }
        got += n;
    }
    Ok(Some(payload))
}

/// Reads and decodes one message; `Ok(None)` on a clean end of stream.
pub async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    recv: &mut R,
    max: usize,
) -> Result<Option<T>, FrameError> {
    match read_frame(recv, max).await? {
        Some(payload) => decode(&payload).map(Some),
        None => Ok(None),
    }
}

/// Encodes and writes one message.
pub async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    send: &mut W,
    msg: &T,
    max: usize,
) -> Result<(), FrameError> {
    let frame = encode(msg, max)?;
    send.write_all(&frame).await.map_err(FrameError::Io)
}

fn frame_len(prefix: &[u8]) -> usize {
    let mut b = [0u8; LEN_PREFIX];
    b.copy_from_slice(&prefix[..LEN_PREFIX]);
    u32::from_be_bytes(b) as usize
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde::Deserialize;

    #[derive(Debug, Serialize, Deserialize, PartialEq, Clone)]
    struct Msg {
        version: u32,
        name: String,
        data: Vec<u8>,
    }

    #[test]
    fn round_trip_through_decoder() {
        let m = Msg {
            version: 1,
            name: "a".into(),
            data: vec![1, 2, 3],
        };
        let frame = encode(&m, 1024).unwrap();
        assert_eq!(&frame[..4], &((frame.len() - 4) as u32).to_be_bytes());
        let mut d = FrameDecoder::new(1024);
        d.push(&frame[..3]);
        assert!(d.next_frame().unwrap().is_none());
        d.push(&frame[3..]);
        let payload = d.next_frame().unwrap().unwrap();
        assert_eq!(decode::<Msg>(&payload).unwrap(), m);
        assert_eq!(peek_version(&payload).unwrap(), 1);
        d.finish().unwrap();
    }

    #[test]
    fn oversized_length_is_refused_before_buffering() {
        let mut d = FrameDecoder::new(16);
        d.push(&100u32.to_be_bytes());
        assert!(matches!(
            d.next_frame(),
            Err(FrameError::TooLarge { len: 100, max: 16 })
        ));
        let m = Msg {
            version: 1,
            name: "x".repeat(64),
            data: vec![],
        };
        assert!(matches!(encode(&m, 16), Err(FrameError::TooLarge { .. })));
    }

    #[test]
    fn truncated_frame_is_reported() {
        let frame = encode(
            &Msg {
                version: 1,
                name: "abc".into(),
                data: vec![9; 10],
            },
            64,
        )
        .unwrap();
        let mut d = FrameDecoder::new(64);
        d.push(&frame[..frame.len() - 2]);
        assert!(d.next_frame().unwrap().is_none());
        assert!(matches!(d.finish(), Err(FrameError::Truncated { .. })));
    }

    #[test]
    fn trailing_bytes_and_garbage_are_malformed() {
        let mut payload = postcard::to_stdvec(&Msg {
            version: 1,
            name: "a".into(),
            data: vec![],
        })
        .unwrap();
        payload.push(0);
        assert!(matches!(
            decode::<Msg>(&payload),
            Err(FrameError::Malformed { .. })
        ));
        assert!(matches!(
            decode::<Msg>(&[0xff, 0xff, 0xff]),
            Err(FrameError::Malformed { .. })
        ));
    }

    #[tokio::test]
    async fn async_read_reports_truncation_and_clean_eof() {
        let frame = encode(
            &Msg {
                version: 1,
                name: "abc".into(),
                data: vec![],
            },
            64,
        )
        .unwrap();
        let mut whole: &[u8] = &frame;
        let m: Msg = read_message(&mut whole, 64).await.unwrap().unwrap();
        assert_eq!(m.name, "abc");
        assert!(
            read_message::<Msg, _>(&mut whole, 64)
                .await
                .unwrap()
                .is_none()
        );
        let mut cut: &[u8] = &frame[..frame.len() - 1];
        assert!(matches!(
            read_message::<Msg, _>(&mut cut, 64).await,
            Err(FrameError::Truncated { .. })
        ));
        let mut short_prefix: &[u8] = &frame[..2];
        assert!(matches!(
            read_message::<Msg, _>(&mut short_prefix, 64).await,
            Err(FrameError::Truncated { .. })
        ));
    }

    proptest! {
        #[test]
        fn decoder_never_panics_on_garbage(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut d = FrameDecoder::new(128);
            d.push(&bytes);
            while let Ok(Some(p)) = d.next_frame() {
                let _ = decode::<Msg>(&p);
            }
        }

        #[test]
        fn frames_split_anywhere_reassemble(name in ".{0,40}", data in proptest::collection::vec(any::<u8>(), 0..200), split in 0usize..300) {
            let m = Msg { version: 7, name, data };
            let frame = encode(&m, 4096).unwrap();
            let split = split.min(frame.len());
            let mut d = FrameDecoder::new(4096);
            d.push(&frame[..split]);
            let first = d.next_frame().unwrap();
            d.push(&frame[split..]);
            let got = match first { Some(p) => p, None => d.next_frame().unwrap().unwrap() };
            prop_assert_eq!(decode::<Msg>(&got).unwrap(), m);
        }
    }
}
