//! A strict, incremental decoder of a chunked body (RFC 9112 §7.1), for the portal's answers
//! relayed by the pass-through lane. The lane re-frames what it decodes: chunk extensions and
//! trailers are read and dropped, as hyper's relay dropped them, so the client only ever gets
//! chunks the lane wrote itself. Anything malformed is an error: the relay then stops and the
//! client's answer ends truncated, never looking complete.

/// Hex digits allowed in a chunk size: 15 keep the size within u64 without overflow checks.
const MAX_SIZE_DIGITS: u32 = 15;

/// Longest chunk-extension or trailer line accepted (they are skipped, not kept).
const MAX_LINE: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading the size's hex digits (how many so far).
    Size(u32),
    /// After the size: an extension (or whitespace) up to CR.
    Ext(usize),
    /// The LF that ends a size line.
    SizeLf,
    /// Data bytes left in this chunk.
    Data(u64),
    DataCr,
    DataLf,
    /// After the last chunk: a trailer line (bytes so far) or the empty line that ends it all.
    Trailer(usize),
    TrailerLf(bool),
    Done,
}

#[derive(Debug, Clone)]
pub struct Decoder {
    state: State,
    size: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct Malformed;

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            state: State::Size(0),
            size: 0,
        }
    }
}

impl Decoder {
    /// Whether the terminating chunk and trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Decodes `input`, calling `data` with each run of body bytes. Returns how many bytes of
    /// `input` were consumed: all of them, unless the body ended before its end (the rest
    /// belongs to the next message).
    pub fn decode(
        &mut self,
        input: &[u8],
        mut data: impl FnMut(&[u8]),
    ) -> Result<usize, Malformed> {
        let mut i = 0;
        while i < input.len() {
            let b = input[i];
            self.state = match self.state {
                State::Done => return Ok(i),
                State::Data(left) => {
                    let n = usize::try_from(left)
                        .unwrap_or(usize::MAX)
                        .min(input.len() - i);
                    data(&input[i..i + n]);
                    i += n;
                    let left = left - n as u64;
                    self.state = if left == 0 {
                        State::DataCr
                    } else {
                        State::Data(left)
                    };
                    continue;
                }
                State::Size(digits) => match hex(b) {
                    Some(v) if digits < MAX_SIZE_DIGITS => {
                        self.size = self.size * 16 + u64::from(v);
                        State::Size(digits + 1)
                    }
                    Some(_) => return Err(Malformed),
                    None if digits == 0 => return Err(Malformed),
                    None if b == b'\r' => State::SizeLf,
                    None if b == b';' || b == b' ' || b == b'\t' => State::Ext(0),
                    None => return Err(Malformed),
                },
                State::Ext(_) if b == b'\r' => State::SizeLf,
                State::Ext(n) if b == b'\n' || n >= MAX_LINE => return Err(Malformed),
                State::Ext(n) => State::Ext(n + 1),
                State::SizeLf if b == b'\n' => {
                    let size = std::mem::take(&mut self.size);
                    if size == 0 {
                        State::Trailer(0)
                    } else {
                        State::Data(size)
                    }
                }
                State::DataCr if b == b'\r' => State::DataLf,
                State::DataLf if b == b'\n' => State::Size(0),
                State::Trailer(n) if b == b'\r' => State::TrailerLf(n == 0),
                State::Trailer(n) if b == b'\n' || n >= MAX_LINE => return Err(Malformed),
                State::Trailer(n) => State::Trailer(n + 1),
                State::TrailerLf(last) if b == b'\n' => {
                    if last {
                        State::Done
                    } else {
                        State::Trailer(0)
                    }
                }
                State::SizeLf | State::DataCr | State::DataLf | State::TrailerLf(_) => {
                    return Err(Malformed)
                }
            };
            i += 1;
        }
        Ok(i)
    }
}

fn hex(b: u8) -> Option<u8> {
    char::from(b)
        .to_digit(16)
        .and_then(|d| u8::try_from(d).ok())
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Decodes `input` fed in pieces of `step` bytes: the body and the bytes left over.
    fn decode(input: &[u8], step: usize) -> Result<(Vec<u8>, usize, bool), Malformed> {
        let mut d = Decoder::default();
        let mut out = Vec::new();
        let mut used = 0;
        for piece in input.chunks(step.max(1)) {
            let n = d.decode(piece, |b| out.extend_from_slice(b))?;
            used += n;
            if n < piece.len() {
                break;
            }
        }
        Ok((out, input.len() - used, d.is_done()))
    }

    #[test]
    fn chunks_extensions_and_trailers() {
        let raw = b"5;name=v\r\nhello\r\n1\r\n \r\n0\r\nX-T: 1\r\n\r\nNEXT";
        for step in [1, 2, 7, raw.len()] {
            assert_eq!(
                decode(raw, step),
                Ok((b"hello ".to_vec(), 4, true)),
                "{step}"
            );
        }
    }

    #[test]
    fn malformed_bodies_are_errors() {
        for raw in [
            &b"x\r\n"[..],
            b"\r\n",
            b"5\r\nhelloX\r\n",
            b"5\nhello\r\n",
            b"1000000000000000\r\n",
            b"0\r\nbad\nline\r\n\r\n",
        ] {
            assert_eq!(decode(raw, raw.len()), Err(Malformed), "{raw:?}");
        }
    }

    #[test]
    fn an_unfinished_body_is_not_done() {
        assert_eq!(decode(b"5\r\nhel", 3), Ok((b"hel".to_vec(), 0, false)));
    }

    proptest! {
        /// Any body, chunked in any way and fed in any pieces, decodes to itself.
        #[test]
        fn chunked_bodies_round_trip(
            parts in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 1..50), 0..8),
            step in 1usize..64,
        ) {
            let mut raw = Vec::new();
            for p in &parts {
                raw.extend_from_slice(format!("{:X}\r\n", p.len()).as_bytes());
                raw.extend_from_slice(p);
                raw.extend_from_slice(b"\r\n");
            }
            raw.extend_from_slice(b"0\r\n\r\n");
            let want: Vec<u8> = parts.concat();
            prop_assert_eq!(decode(&raw, step), Ok((want, 0, true)));
        }

        /// Arbitrary bytes never panic the decoder, and it never reads past the end.
        #[test]
        fn arbitrary_bytes_never_panic(raw in proptest::collection::vec(any::<u8>(), 0..300), step in 1usize..40) {
            if let Ok((out, left, _)) = decode(&raw, step) {
                prop_assert!(out.len() + left <= raw.len());
            }
        }
    }
}
