//! Key layout for ordered byte-key backends (the disk backend).
//!
//! Place in the data flow: between a [`StoreOp`](crate::StoreOp) and the backend's write batch.
//! Everything a session owns is keyed by a prefix of its client id, so that deleting a session
//! or loading its queue is one range scan. The client id is length-prefixed (`u16`, as in
//! MQTT), so that no client id is a prefix of another's keys; sequence numbers and packet ids
//! are big-endian, so byte order is numeric order.

/// `len(client_id) as u16 BE ++ client_id`: the prefix of every key a session owns.
pub fn client_prefix(client_id: &str) -> Vec<u8> {
    let mut k = Vec::with_capacity(2 + client_id.len() + 8);
    // MQTT strings are at most 65,535 bytes, so the length always fits.
    let len = u16::try_from(client_id.len()).unwrap_or(u16::MAX);
    k.extend_from_slice(&len.to_be_bytes());
    k.extend_from_slice(client_id.as_bytes());
    k
}

/// The key of a session-owned entry: the client prefix then `suffix`.
pub fn owned_key(client_id: &str, suffix: &[u8]) -> Vec<u8> {
    let mut k = client_prefix(client_id);
    k.extend_from_slice(suffix);
    k
}

/// Splits an owned key into its client id and suffix; `None` for a malformed key.
pub fn split_owned_key(key: &[u8]) -> Option<(&str, &[u8])> {
    let (len, rest) = key.split_first_chunk::<2>()?;
    let len = usize::from(u16::from_be_bytes(*len));
    if rest.len() < len {
        return None;
    }
    let (id, suffix) = rest.split_at(len);
    Some((std::str::from_utf8(id).ok()?, suffix))
}

/// The smallest key greater than every key starting with `prefix` (`None`: no bound).
pub fn prefix_end(prefix: &[u8]) -> Option<Vec<u8>> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < u8::MAX {
            end.push(last + 1);
            return Some(end);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owned_keys_split_back_and_never_collide_across_clients() {
        let k = owned_key("ab", &7u64.to_be_bytes());
        assert_eq!(split_owned_key(&k), Some(("ab", &7u64.to_be_bytes()[..])));
        // "a" + suffix starting with "b" must not fall in the range of client "ab".
        let a = owned_key("a", b"b\0\0");
        let prefix = client_prefix("ab");
        assert!(!a.starts_with(&prefix));
        assert_eq!(split_owned_key(&[0, 5, b'x']), None);
        assert_eq!(split_owned_key(&[0]), None);
    }

    #[test]
    fn prefix_end_bounds_the_prefix() {
        assert_eq!(prefix_end(b"ab"), Some(b"ac".to_vec()));
        assert_eq!(prefix_end(&[1, 0xff]), Some(vec![2]));
        assert_eq!(prefix_end(&[0xff, 0xff]), None);
        let p = client_prefix("c");
        let end = prefix_end(&p).unwrap();
        assert!(owned_key("c", &[0xff; 9]) < end);
        assert!(owned_key("c", &[]) >= p);
    }
}
