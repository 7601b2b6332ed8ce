//! Request headers as the host hands them over in one call (`proxy_get_header_map_pairs`), read
//! in place: no copy, no allocation, no UTF-8 check.
//!
//! The proxy-wasm serialisation (little-endian `u32`s):
//!
//! ```text
//!  count | key_len[0] value_len[0] … key_len[n-1] value_len[n-1] | key[0] \0 value[0] \0 …
//! ```
//!
//! A malformed buffer (short, lengths past the end) yields the pairs that are whole and then
//! stops; nothing here panics on any input.

use std::borrow::Cow;

use crate::decision::{RequestView, join_borrowed};

/// A view of a serialised header map. `Default` is the empty map.
#[derive(Debug, Clone, Copy, Default)]
pub struct HeaderPairs<'a> {
    bytes: &'a [u8],
}

impl<'a> HeaderPairs<'a> {
    /// Views `bytes` (the host's buffer, as returned) as header pairs.
    pub fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    /// Every (name, value) pair in the order the host sent them.
    pub fn iter(&self) -> Pairs<'a> {
        let count = read_u32(self.bytes, 0).unwrap_or(0);
        // The data starts after the count and two lengths per pair.
        let data = (count as usize)
            .checked_mul(8)
            .and_then(|n| n.checked_add(4))
            .filter(|&start| start <= self.bytes.len());
        Pairs {
            bytes: self.bytes,
            remaining: if data.is_some() { count } else { 0 },
            size_at: 4,
            data_at: data.unwrap_or(0),
        }
    }

    /// The first value of header `name` (lower-case), e.g. `:authority`.
    pub fn first(&self, name: &str) -> Option<&'a [u8]> {
        self.iter()
            .find(|(key, _)| *key == name.as_bytes())
            .map(|(_, value)| value)
    }
}

impl RequestView for HeaderPairs<'_> {
    fn for_each_value(&self, name: &str, each: &mut dyn FnMut(&[u8])) {
        for (key, value) in self.iter() {
            if key == name.as_bytes() {
                each(value);
            }
        }
    }

    /// A header sent once is lent from the host's buffer, not copied.
    fn joined(&self, name: &str) -> Option<Cow<'_, [u8]>> {
        join_borrowed(
            self.iter()
                .filter(|(key, _)| *key == name.as_bytes())
                .map(|(_, value)| value),
        )
    }
}

/// Iterator over [`HeaderPairs`].
#[derive(Debug, Clone)]
pub struct Pairs<'a> {
    bytes: &'a [u8],
    remaining: u32,
    /// Offset of the next pair's two lengths.
    size_at: usize,
    /// Offset of the next pair's key.
    data_at: usize,
}

impl<'a> Iterator for Pairs<'a> {
    type Item = (&'a [u8], &'a [u8]);

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining == 0 {
            return None;
        }
        let pair = self.read();
        // A malformed pair ends the iteration.
        self.remaining = if pair.is_some() {
            self.remaining - 1
        } else {
            0
        };
        pair
    }
}

impl<'a> Pairs<'a> {
    fn read(&mut self) -> Option<(&'a [u8], &'a [u8])> {
        let key_len = read_u32(self.bytes, self.size_at)? as usize;
        let value_len = read_u32(self.bytes, self.size_at.checked_add(4)?)? as usize;
        let key_end = self.data_at.checked_add(key_len)?;
        let key = self.bytes.get(self.data_at..key_end)?;
        let value_at = key_end.checked_add(1)?;
        let value_end = value_at.checked_add(value_len)?;
        let value = self.bytes.get(value_at..value_end)?;
        self.size_at = self.size_at.checked_add(8)?;
        self.data_at = value_end.checked_add(1)?;
        Some((key, value))
    }
}

fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    let word = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes(word.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::decision::joined_value;
    use proptest::prelude::*;

    /// The proxy-wasm serialisation (as Envoy and the SDK's `serialize_map` write it).
    fn serialize(pairs: &[(&[u8], &[u8])]) -> Vec<u8> {
        let mut out = (pairs.len() as u32).to_le_bytes().to_vec();
        for (key, value) in pairs {
            out.extend((key.len() as u32).to_le_bytes());
            out.extend((value.len() as u32).to_le_bytes());
        }
        for (key, value) in pairs {
            out.extend(*key);
            out.push(0);
            out.extend(*value);
            out.push(0);
        }
        out
    }

    #[test]
    fn pairs_are_read_in_place_in_order() {
        let bytes = serialize(&[
            (b":authority", b"demo.local"),
            (b"x-canary", b"1"),
            (b"empty", b""),
            (b"x-canary", b"0"),
            (b"bin", b"\xff\x00\xfe"),
        ]);
        let headers = HeaderPairs::new(&bytes);
        assert_eq!(headers.iter().count(), 5);
        assert_eq!(headers.first(":authority"), Some(&b"demo.local"[..]));
        assert_eq!(headers.first("x-canary"), Some(&b"1"[..]));
        assert_eq!(headers.first("empty"), Some(&b""[..]));
        assert_eq!(headers.first("bin"), Some(&b"\xff\x00\xfe"[..]));
        assert_eq!(headers.first("absent"), None);
        assert_eq!(
            joined_value(&headers, "x-canary").as_deref(),
            Some(&b"1,0"[..])
        );
        assert_eq!(headers.joined("x-canary").as_deref(), Some(&b"1,0"[..]));
        assert!(matches!(
            headers.joined(":authority"),
            Some(Cow::Borrowed(b"demo.local"))
        ));
        assert_eq!(headers.joined("absent"), None);
    }

    #[test]
    fn empty_and_malformed_buffers_yield_only_whole_pairs() {
        assert_eq!(HeaderPairs::default().iter().count(), 0);
        assert_eq!(HeaderPairs::new(&[1, 0]).iter().count(), 0);
        let bytes = serialize(&[(b"a", b"1"), (b"b", b"22")]);
        // Cut inside the second value: the first pair is whole.
        let cut = &bytes[..bytes.len() - 2];
        let pairs: Vec<_> = HeaderPairs::new(cut).iter().collect();
        assert_eq!(pairs, vec![(&b"a"[..], &b"1"[..])]);
        // A count far larger than the buffer: nothing.
        let mut huge = bytes.clone();
        huge[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(HeaderPairs::new(&huge).iter().count(), 0);
    }

    proptest! {
        #[test]
        fn any_bytes_are_read_without_panicking(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let headers = HeaderPairs::new(&bytes);
            let _ = headers.iter().count();
            let _ = headers.first(":authority");
        }

        #[test]
        fn serialised_pairs_round_trip(
            pairs in proptest::collection::vec(
                (proptest::collection::vec(any::<u8>(), 0..16), proptest::collection::vec(any::<u8>(), 0..16)),
                0..12,
            )
        ) {
            let borrowed: Vec<(&[u8], &[u8])> =
                pairs.iter().map(|(k, v)| (k.as_slice(), v.as_slice())).collect();
            let bytes = serialize(&borrowed);
            let headers = HeaderPairs::new(&bytes);
            let read: Vec<_> = headers.iter().collect();
            prop_assert_eq!(&read, &borrowed);
            // The lending `joined` agrees with the copying rule of the shared core.
            for (key, _) in &borrowed {
                let Ok(name) = std::str::from_utf8(key) else { continue };
                prop_assert_eq!(headers.joined(name).map(|v| v.into_owned()), joined_value(&headers, name));
            }
        }
    }
}
