//! Finding the end of a chunked body as it streams through, without decoding it: the proxy
//! relays chunked bytes as they are and only needs to know where the message ends (so the
//! connection can carry the next one) and that the framing is valid.

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Size { digits: u8 },
    Extension,
    SizeLf,
    Data(u64),
    DataCr,
    DataLf,
    TrailerStart,
    TrailerLine,
    TrailerLf,
    EndLf,
    Done,
}

#[derive(Debug, Clone)]
pub struct ChunkedScanner {
    state: State,
    size: u64,
}

impl Default for ChunkedScanner {
    fn default() -> Self {
        Self {
            state: State::Size { digits: 0 },
            size: 0,
        }
    }
}

impl ChunkedScanner {
    /// Feeds the next bytes of the body. `Ok(Some(n))`: the body ended after the first `n` bytes
    /// of `input`; `Ok(None)`: all of `input` is body and more is to come.
    pub fn feed(&mut self, input: &[u8]) -> Result<Option<usize>, &'static str> {
        let mut i = 0;
        while i < input.len() {
            if let State::Data(remaining) = self.state {
                let take = remaining.min((input.len() - i) as u64);
                i += take as usize;
                self.state = if take == remaining {
                    State::DataCr
                } else {
                    State::Data(remaining - take)
                };
                continue;
            }
            let b = input[i];
            i += 1;
            self.state = match (self.state, b) {
                (State::Size { digits }, b) if b.is_ascii_hexdigit() => {
                    if digits >= 15 {
                        return Err("chunk size too large");
                    }
                    self.size = self.size * 16 + u64::from(hex(b));
                    State::Size { digits: digits + 1 }
                }
                (State::Size { digits }, b';' | b' ' | b'\t') if digits > 0 => State::Extension,
                (State::Size { digits }, b'\r') if digits > 0 => State::SizeLf,
                (State::Extension, b'\r') => State::SizeLf,
                (State::Extension, b'\n') => return Err("invalid chunked encoding"),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') => match std::mem::take(&mut self.size) {
                    0 => State::TrailerStart,
                    n => State::Data(n),
                },
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => State::Size { digits: 0 },
                (State::TrailerStart, b'\r') => State::EndLf,
                (State::TrailerStart | State::TrailerLine, b'\n') => {
                    return Err("invalid chunked trailer")
                }
                (State::TrailerLine, b'\r') => State::TrailerLf,
                (State::TrailerStart | State::TrailerLine, _) => State::TrailerLine,
                (State::TrailerLf, b'\n') => State::TrailerStart,
                (State::EndLf, b'\n') => {
                    self.state = State::Done;
                    return Ok(Some(i));
                }
                _ => return Err("invalid chunked encoding"),
            };
        }
        Ok(None)
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::ChunkedScanner;

    fn end_of(body: &[u8], piece: usize) -> Result<Option<usize>, &'static str> {
        let mut s = ChunkedScanner::default();
        let mut seen = 0;
        for part in body.chunks(piece) {
            if let Some(n) = s.feed(part)? {
                return Ok(Some(seen + n));
            }
            seen += part.len();
        }
        Ok(None)
    }

    #[test]
    fn finds_the_end_whatever_the_read_sizes() {
        let body =
            b"5\r\nhello\r\n1a;ext=1\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nx-t: 1\r\n\r\nNEXT";
        for piece in [1, 2, 3, 7, 100] {
            assert_eq!(
                end_of(body, piece),
                Ok(Some(body.len() - 4)),
                "piece {piece}"
            );
        }
    }

    #[test]
    fn an_unfinished_body_asks_for_more() {
        assert_eq!(end_of(b"5\r\nhel", 4), Ok(None));
        assert_eq!(end_of(b"0\r\n", 4), Ok(None));
    }

    #[test]
    fn invalid_framing_is_an_error() {
        for bad in [
            &b"zz\r\nhello\r\n0\r\n\r\n"[..],
            b"5\r\nhelloXX0\r\n\r\n",
            b"\r\n",
            b"5\nhello",
        ] {
            assert!(
                end_of(bad, 3).is_err(),
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
        assert!(end_of(b"ffffffffffffffff1\r\n", 64).is_err());
    }
}
