//! `Ring`: the most recent output of one session, addressed by absolute byte offset, so a
//! client that comes back after a dropped socket gets exactly the bytes it missed, and a
//! viewer gets the current screen.
//!
//! Offsets count every output byte since the shell started; the ring keeps the last
//! `capacity` of them. Memory grows with the output actually held, not with the capacity,
//! so an idle session costs next to nothing.

use std::collections::VecDeque;

use bytes::Bytes;

pub struct Ring {
    buf: VecDeque<u8>,
    capacity: usize,
    /// Offset one past the newest byte: every byte the session has output.
    end: u64,
}

/// What a client that has received `offset` bytes gets back.
#[derive(Debug, PartialEq, Eq)]
pub struct Replay {
    /// The offset of the first byte replayed.
    pub from: u64,
    /// Some bytes the client missed are no longer held.
    pub truncated: bool,
    /// The bytes, in frames of at most the chunk size asked for.
    pub chunks: Vec<Bytes>,
}

/// How far into a truncated replay a line start is looked for (see `since`).
const LINE_SEARCH: usize = 4096;

/// An offset past the end of the output: the client claims bytes that were never sent.
#[derive(Debug, PartialEq, Eq)]
pub struct AheadOfOutput;

impl Ring {
    pub fn new(capacity: usize) -> Self {
        Ring {
            buf: VecDeque::new(),
            capacity,
            end: 0,
        }
    }

    #[cfg(test)]
    pub fn end(&self) -> u64 {
        self.end
    }

    /// Holds as much as it can: more output would push out bytes not yet replayed.
    pub fn is_full(&self) -> bool {
        self.buf.len() >= self.capacity
    }

    /// The offset of the oldest byte still held.
    pub fn start(&self) -> u64 {
        self.end - self.buf.len() as u64
    }

    pub fn push(&mut self, bytes: &[u8]) {
        self.end += bytes.len() as u64;
        if self.capacity == 0 {
            return;
        }
        let bytes = &bytes[bytes.len().saturating_sub(self.capacity)..];
        let overflow = (self.buf.len() + bytes.len()).saturating_sub(self.capacity);
        self.buf.drain(..overflow);
        self.buf.extend(bytes);
    }

    /// The bytes from `offset` on, or, if the oldest byte held is later, from the first
    /// line start among the oldest bytes held: a replay that cannot be exact at least does
    /// not begin inside a character or an escape sequence.
    pub fn since(&self, offset: u64, chunk: usize) -> Result<Replay, AheadOfOutput> {
        if offset > self.end {
            return Err(AheadOfOutput);
        }
        let mut skip = offset.saturating_sub(self.start()) as usize;
        if offset < self.start() {
            let head = self.buf.iter().take(LINE_SEARCH);
            if let Some(newline) = head.into_iter().position(|&b| b == b'\n') {
                skip = newline + 1;
            }
        }
        let from = self.start() + skip as u64;
        let chunk = chunk.max(1);
        let (a, b) = self.buf.as_slices();
        let (a, b) = if skip < a.len() {
            (&a[skip..], b)
        } else {
            (&[][..], &b[skip - a.len()..])
        };
        let mut chunks = Vec::new();
        let mut current = Vec::new();
        for mut piece in [a, b] {
            while !piece.is_empty() {
                let take = (chunk - current.len()).min(piece.len());
                current.extend_from_slice(&piece[..take]);
                piece = &piece[take..];
                if current.len() == chunk {
                    chunks.push(Bytes::from(std::mem::take(&mut current)));
                }
            }
        }
        if !current.is_empty() {
            chunks.push(Bytes::from(current));
        }
        Ok(Replay {
            from,
            truncated: from > offset,
            chunks,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn full_once_it_holds_its_capacity() {
        let mut ring = Ring::new(4);
        assert!(!ring.is_full());
        ring.push(b"abc");
        assert!(!ring.is_full());
        ring.push(b"de");
        assert!(ring.is_full(), "it holds 4 of 5 bytes");
        assert!(
            Ring::new(0).is_full(),
            "a ring of 0 bytes holds nothing more"
        );
    }

    fn joined(r: &Replay) -> Vec<u8> {
        r.chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn replays_exactly_what_was_missed() {
        let mut ring = Ring::new(10);
        ring.push(b"hello ");
        ring.push(b"wor");
        assert_eq!(ring.end(), 9);
        let r = ring.since(6, 64).unwrap();
        assert_eq!(
            (r.from, r.truncated, joined(&r)),
            (6, false, b"wor".to_vec())
        );
        let r = ring.since(9, 64).unwrap();
        assert!(r.chunks.is_empty() && !r.truncated);
        assert_eq!(ring.since(10, 64), Err(AheadOfOutput));
    }

    #[test]
    fn overwrites_the_oldest_and_says_so() {
        let mut ring = Ring::new(4);
        ring.push(b"abc");
        ring.push(b"def");
        assert_eq!((ring.start(), ring.end()), (2, 6));
        let r = ring.since(0, 64).unwrap();
        assert_eq!(
            (r.from, r.truncated, joined(&r)),
            (2, true, b"cdef".to_vec())
        );
        // An exact replay is never trimmed, whatever it starts with.
        let r = ring.since(3, 64).unwrap();
        assert_eq!(
            (r.from, r.truncated, joined(&r)),
            (3, false, b"def".to_vec())
        );
        // A push larger than the ring keeps its tail.
        ring.push(b"0123456789");
        let r = ring.since(0, 64).unwrap();
        assert_eq!((r.from, joined(&r)), (12, b"6789".to_vec()));
    }

    #[test]
    fn a_truncated_replay_starts_at_a_line() {
        let mut ring = Ring::new(10);
        // 23 bytes; the ring holds the last 10: "cond\nthird".
        ring.push(b"first line\nsecond\nthird");
        let r = ring.since(0, 64).unwrap();
        assert_eq!(
            (r.from, r.truncated, joined(&r)),
            (18, true, b"third".to_vec())
        );
        // No line start in reach: the oldest byte held it is.
        let mut ring = Ring::new(4);
        ring.push(b"abcdefgh");
        let r = ring.since(0, 64).unwrap();
        assert_eq!((r.from, joined(&r)), (4, b"efgh".to_vec()));
    }

    #[test]
    fn chunks_are_bounded_across_the_wrap() {
        let mut ring = Ring::new(8);
        for b in 0u8..13 {
            ring.push(&[b]);
        }
        let r = ring.since(5, 3).unwrap();
        assert!(r.chunks.iter().all(|c| c.len() <= 3));
        assert_eq!(joined(&r), (5u8..13).collect::<Vec<_>>());
    }

    #[test]
    fn zero_capacity_counts_but_holds_nothing() {
        let mut ring = Ring::new(0);
        ring.push(b"abc");
        let r = ring.since(1, 64).unwrap();
        assert_eq!((r.from, r.truncated, r.chunks.len()), (3, true, 0));
    }
}
