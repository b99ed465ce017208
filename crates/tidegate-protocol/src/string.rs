//! [`Utf8`]: an MQTT UTF-8 encoded string backed by shared [`Bytes`], so that decoding a topic
//! does not copy it and fanning a message out to many subscribers only bumps a reference count.

use bytes::Bytes;
use std::fmt;
use std::ops::Deref;

/// Why bytes are not an MQTT UTF-8 string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Utf8Error {
    /// [MQTT-1.5.4-1] the bytes are not well-formed UTF-8.
    #[error("[MQTT-1.5.4-1] not well-formed UTF-8")]
    Invalid,
    /// [MQTT-1.5.4-2] the string contains U+0000.
    #[error("[MQTT-1.5.4-2] string contains U+0000")]
    Null,
    /// A string longer than the 65,535 bytes its 2-byte length prefix can express.
    #[error("string longer than 65535 bytes")]
    TooLong,
}

/// A validated MQTT string: well-formed UTF-8 without U+0000, at most 65,535 bytes.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct Utf8(Bytes);

impl Utf8 {
    /// The empty string.
    pub const fn new() -> Utf8 {
        Utf8(Bytes::new())
    }

    /// Wraps a static string. Panics at the call site only for a literal with U+0000 or longer
    /// than 65,535 bytes, which is a programming error, never peer data.
    pub fn from_static(s: &'static str) -> Utf8 {
        match Self::check(s.as_bytes()) {
            Ok(()) => Utf8(Bytes::from_static(s.as_bytes())),
            Err(e) => panic!("invalid static MQTT string {s:?}: {e}"),
        }
    }

    /// Validates shared bytes as an MQTT string without copying them.
    pub fn try_from_bytes(bytes: Bytes) -> Result<Utf8, Utf8Error> {
        Self::check(&bytes)?;
        Ok(Utf8(bytes))
    }

    fn check(b: &[u8]) -> Result<(), Utf8Error> {
        if b.len() > u16::MAX as usize {
            return Err(Utf8Error::TooLong);
        }
        let s = std::str::from_utf8(b).map_err(|_| Utf8Error::Invalid)?;
        if s.contains('\0') {
            return Err(Utf8Error::Null);
        }
        Ok(())
    }

    /// The string.
    pub fn as_str(&self) -> &str {
        // SAFETY: every constructor validated the bytes as UTF-8 and the bytes are immutable.
        unsafe { std::str::from_utf8_unchecked(&self.0) }
    }

    /// The underlying shared bytes.
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }
}

impl TryFrom<&str> for Utf8 {
    type Error = Utf8Error;
    fn try_from(s: &str) -> Result<Utf8, Utf8Error> {
        Self::check(s.as_bytes())?;
        Ok(Utf8(Bytes::copy_from_slice(s.as_bytes())))
    }
}

impl TryFrom<String> for Utf8 {
    type Error = Utf8Error;
    fn try_from(s: String) -> Result<Utf8, Utf8Error> {
        Self::check(s.as_bytes())?;
        Ok(Utf8(Bytes::from(s.into_bytes())))
    }
}

impl Deref for Utf8 {
    type Target = str;
    fn deref(&self) -> &str {
        self.as_str()
    }
}

impl AsRef<str> for Utf8 {
    fn as_ref(&self) -> &str {
        self.as_str()
    }
}

impl fmt::Debug for Utf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self.as_str(), f)
    }
}

impl fmt::Display for Utf8 {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl PartialEq<str> for Utf8 {
    fn eq(&self, other: &str) -> bool {
        self.as_str() == other
    }
}

impl PartialEq<&str> for Utf8 {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_null_and_bad_utf8() {
        assert_eq!(Utf8::try_from("a\0b"), Err(Utf8Error::Null));
        assert_eq!(
            Utf8::try_from_bytes(Bytes::from_static(&[0xff, 0xfe])),
            Err(Utf8Error::Invalid)
        );
        assert_eq!(Utf8::try_from("a/b").map(|s| s.len()), Ok(3));
    }
}
