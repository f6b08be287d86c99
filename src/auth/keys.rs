//! Static API keys with names.
//!
//! A key is an opaque string the operator hands out; its name (from an
//! `--api-key-file` line `name: key`, else `key-N` by position) is the
//! principal that owns what the key's holder creates. Keys are kept only as
//! SHA-256 digests and a presented key is hashed and compared against every
//! digest in constant time, so neither which key matched nor how long the
//! keys are shows in the timing.

use sha2::{Digest, Sha256};
use subtle::{ConditionallySelectable, ConstantTimeEq};

/// Shortest accepted key: a guessable key is no key.
pub const MIN_KEY_LEN: usize = 16;

/// One configured key, before hashing.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiKey {
    /// The principal name of whoever holds the key.
    pub name: String,
    /// The key itself.
    pub key: String,
}

impl std::fmt::Debug for ApiKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log line, not even through `{:?}`.
        f.debug_struct("ApiKey")
            .field("name", &self.name)
            .field("key", &"<redacted>")
            .finish()
    }
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._@+-".contains(&b))
}

/// Parses an `--api-key-file`: `name: key` lines, or bare keys named
/// `key-N` by their position among all keys (`first` is the position of the
/// first line's key). Blank lines and `#` comments are skipped.
pub fn parse_key_file(text: &str, first: usize) -> Result<Vec<ApiKey>, String> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let key = match line.split_once(": ") {
            Some((name, key)) => {
                let name = name.trim();
                if !valid_name(name) {
                    return Err(format!(
                        "line {}: a key name is 1-64 letters, digits or ._@+-",
                        n + 1
                    ));
                }
                ApiKey {
                    name: name.to_string(),
                    key: key.trim().to_string(),
                }
            }
            None => ApiKey {
                name: format!("key-{}", first + out.len() + 1),
                key: line.to_string(),
            },
        };
        out.push(key);
    }
    Ok(out)
}

/// Names bare keys `key-1`, `key-2`… by position.
pub fn name_by_position(keys: Vec<String>) -> Vec<ApiKey> {
    keys.into_iter()
        .enumerate()
        .map(|(i, key)| ApiKey {
            name: format!("key-{}", i + 1),
            key,
        })
        .collect()
}

/// Checks that keys are long enough and that names and keys are unique.
pub fn validate(keys: &[ApiKey]) -> Result<(), String> {
    if keys.iter().any(|k| k.key.len() < MIN_KEY_LEN) {
        return Err(format!(
            "API keys must be at least {MIN_KEY_LEN} characters long"
        ));
    }
    for (i, k) in keys.iter().enumerate() {
        if keys[..i].iter().any(|o| o.name == k.name) {
            return Err(format!("API key name {:?} is used twice", k.name));
        }
        if keys[..i].iter().any(|o| o.key == k.key) {
            return Err(format!(
                "API keys {:?} and another one are the same key",
                k.name
            ));
        }
    }
    Ok(())
}

/// The keys as digests.
#[derive(Debug, Clone)]
pub struct KeyRing {
    digests: Vec<[u8; 32]>,
    names: Vec<String>,
}

fn digest(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
}

impl KeyRing {
    /// Hashes the keys.
    pub fn new(keys: &[ApiKey]) -> KeyRing {
        KeyRing {
            digests: keys.iter().map(|k| digest(k.key.as_bytes())).collect(),
            names: keys.iter().map(|k| k.name.clone()).collect(),
        }
    }

    /// Whether there are no keys.
    pub fn is_empty(&self) -> bool {
        self.digests.is_empty()
    }

    /// The name of the key `presented` is, if it is one. Every digest is
    /// compared, matching or not.
    pub fn find(&self, presented: &[u8]) -> Option<&str> {
        let d = digest(presented);
        let mut found = 0u32.ct_eq(&1); // false
        let mut index = 0u32;
        for (i, k) in self.digests.iter().enumerate() {
            let hit = k.ct_eq(&d);
            index.conditional_assign(&(i as u32), hit);
            found |= hit;
        }
        bool::from(found).then(|| self.names[index as usize].as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_file_lines_carry_names_or_get_positions() {
        let keys = parse_key_file(
            "# team keys\nalice: aaaaaaaaaaaaaaaaaaaa\n\nbbbbbbbbbbbbbbbbbbbb\nci-bot: c:c:cccccccccccccccc\n",
            1,
        )
        .unwrap();
        assert_eq!(keys[0].name, "alice");
        assert_eq!(keys[0].key, "aaaaaaaaaaaaaaaaaaaa");
        assert_eq!(keys[1].name, "key-3");
        assert_eq!(keys[2].name, "ci-bot");
        assert_eq!(keys[2].key, "c:c:cccccccccccccccc");
        assert!(parse_key_file("bad name: kkkkkkkkkkkkkkkkkk", 0).is_err());
        assert!(!format!("{:?}", keys[0]).contains("aaaa"));
    }

    #[test]
    fn keys_are_found_by_digest_whatever_their_length() {
        let ring = KeyRing::new(&[
            ApiKey {
                name: "a".into(),
                key: "0123456789abcdef".into(),
            },
            ApiKey {
                name: "b".into(),
                key: "a-much-longer-key-of-forty-characters-xx".into(),
            },
        ]);
        assert_eq!(ring.find(b"0123456789abcdef"), Some("a"));
        assert_eq!(
            ring.find(b"a-much-longer-key-of-forty-characters-xx"),
            Some("b")
        );
        assert_eq!(ring.find(b"0123456789abcde"), None);
        assert_eq!(ring.find(b""), None);
    }

    #[test]
    fn duplicates_and_short_keys_are_refused() {
        let k = |n: &str, k: &str| ApiKey {
            name: n.into(),
            key: k.into(),
        };
        assert!(validate(&[k("a", "short")]).is_err());
        assert!(validate(&[k("a", "0123456789abcdef"), k("a", "fedcba9876543210")]).is_err());
        assert!(validate(&[k("a", "0123456789abcdef"), k("b", "0123456789abcdef")]).is_err());
        assert!(validate(&[k("a", "0123456789abcdef"), k("b", "fedcba9876543210")]).is_ok());
    }
}
