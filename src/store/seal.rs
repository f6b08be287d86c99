//! Sealing: every stored secret is encrypted with AES-256-GCM before it
//! leaves the process, under a key the store itself never holds.
//!
//! Owns: store keys (32 bytes, base64 in `MCP_PROXY_STORE_KEY` or a key
//! file), their key ids, the key ring used during a rotation, and the
//! sealed form of one value. Does not own: where sealed values live
//! (the backends) or who may read them (the callers).
//!
//! Each value gets a fresh random 96-bit nonce. The associated data binds
//! the sealed bytes to their row, `(principal, server, name, key id)`, so a
//! value copied to another row (another user's, another server's) fails to
//! open instead of serving the wrong person. The key id is a fingerprint of
//! the key (a GCM tag over a constant), so the store can say which key sealed
//! a row without holding anything that helps to recover it.

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::Engine;
use zeroize::Zeroizing;

/// Bytes of a store key (AES-256).
pub const KEY_BYTES: usize = 32;
/// Bytes of a GCM nonce.
pub const NONCE_BYTES: usize = 12;
/// Largest secret value: credentials are tokens, not files.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;
/// Domain separation for the associated data; bump on a format change.
const AAD_LABEL: &[u8] = b"mcp-proxy/secret/v1";
/// What the key id is computed over.
const KEY_ID_LABEL: &[u8] = b"mcp-proxy/key-id/v1";

/// A secret value. Its `Debug` never shows it and its memory is wiped on drop.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(Zeroizing<Vec<u8>>);

impl Secret {
    /// Wraps bytes.
    pub fn new(bytes: Vec<u8>) -> Secret {
        Secret(Zeroizing::new(bytes))
    }

    /// The value, for the one place that needs it (a child's environment).
    pub fn expose(&self) -> &[u8] {
        &self.0
    }

    /// The buffer itself, to read a value into or shorten it in place.
    /// Growing it past its capacity would leave the old allocation
    /// unwiped: callers reserve the room they need first.
    pub(crate) fn expose_mut_for_read(&mut self) -> &mut Vec<u8> {
        &mut self.0
    }

    /// The value as text, if it is UTF-8.
    pub fn expose_str(&self) -> Option<&str> {
        std::str::from_utf8(&self.0).ok()
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

/// Why a key or a sealed value was refused. Never carries a value or a key.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SealError {
    /// A key that is not 32 bytes of base64.
    #[error("a store key must be 32 bytes, base64-encoded ({0})")]
    BadKey(String),
    /// The row was sealed under a key this process was not given.
    #[error(
        "sealed under key {0}, which is not among the configured store keys (during a rotation give both keys)"
    )]
    UnknownKey(String),
    /// Authentication failed: tampered bytes, the wrong row, or the wrong key.
    #[error("the sealed value does not open: it was altered or belongs to another row")]
    Tampered,
    /// A value over [`MAX_SECRET_BYTES`].
    #[error("secret values are limited to {MAX_SECRET_BYTES} bytes")]
    TooLarge,
}

/// One store key and its id.
pub struct StoreKey {
    cipher: Aes256Gcm,
    id: String,
}

impl std::fmt::Debug for StoreKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "StoreKey({})", self.id)
    }
}

impl StoreKey {
    /// A key from its 32 raw bytes.
    pub fn from_bytes(bytes: &[u8]) -> Result<StoreKey, SealError> {
        if bytes.len() != KEY_BYTES {
            return Err(SealError::BadKey(format!("got {} bytes", bytes.len())));
        }
        // Invariant: the length was checked above.
        let cipher = Aes256Gcm::new_from_slice(bytes).expect("32-byte key");
        let tag = cipher
            .encrypt(
                Nonce::from_slice(&[0u8; NONCE_BYTES]),
                Payload {
                    msg: b"",
                    aad: KEY_ID_LABEL,
                },
            )
            .expect("sealing an empty message cannot fail");
        let id = tag[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(StoreKey { cipher, id })
    }

    /// A key from base64 text (standard or URL-safe alphabet, padding optional).
    pub fn from_base64(text: &str) -> Result<StoreKey, SealError> {
        let text = text.trim();
        let engines = [
            base64::engine::general_purpose::STANDARD,
            base64::engine::general_purpose::STANDARD_NO_PAD,
            base64::engine::general_purpose::URL_SAFE,
            base64::engine::general_purpose::URL_SAFE_NO_PAD,
        ];
        for e in engines {
            if let Ok(bytes) = e.decode(text) {
                let bytes = Zeroizing::new(bytes);
                return StoreKey::from_bytes(&bytes);
            }
        }
        Err(SealError::BadKey("not valid base64".into()))
    }

    /// A fresh random key, as base64 (for `secrets gen-key`).
    pub fn generate_base64() -> String {
        let mut k = Zeroizing::new([0u8; KEY_BYTES]);
        getrandom::fill(&mut k[..]).expect("the OS random source works");
        base64::engine::general_purpose::STANDARD.encode(&k[..])
    }

    /// The key's fingerprint, stored beside every value it sealed.
    pub fn id(&self) -> &str {
        &self.id
    }
}

/// A sealed value as stored: which key, the nonce, ciphertext with its tag.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// Id of the key that sealed it.
    pub key_id: String,
    /// The GCM nonce, unique per value.
    pub nonce: Vec<u8>,
    /// Ciphertext followed by the 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Which row a value belongs to; all of it is bound into the seal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SecretRef {
    /// Who the secret belongs to, as the proxy names them.
    pub principal: String,
    /// The configured server it is for.
    pub server: String,
    /// The secret's name in the server's config (`{ secret = "coda" }`).
    pub name: String,
}

impl SecretRef {
    /// A reference from its three parts.
    pub fn new(principal: &str, server: &str, name: &str) -> SecretRef {
        SecretRef {
            principal: principal.into(),
            server: server.into(),
            name: name.into(),
        }
    }
}

impl std::fmt::Display for SecretRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}/{}", self.principal, self.server, self.name)
    }
}

fn aad(at: &SecretRef, key_id: &str) -> Vec<u8> {
    // Length-prefixed so that ("ab","c") and ("a","bc") differ.
    let mut out = Vec::with_capacity(64);
    out.extend_from_slice(AAD_LABEL);
    for part in [&at.principal, &at.server, &at.name, key_id] {
        out.extend_from_slice(&(part.len() as u32).to_be_bytes());
        out.extend_from_slice(part.as_bytes());
    }
    out
}

/// The keys a process holds: the first seals, all of them open. During a
/// rotation every proxy is given both keys (new first), then
/// `secrets rotate-key` re-seals the rows, then the old key is dropped.
#[derive(Debug)]
pub struct KeyRing {
    keys: Vec<StoreKey>,
}

impl KeyRing {
    /// A ring from keys, the sealing key first. Duplicate keys are dropped.
    pub fn new(keys: Vec<StoreKey>) -> Result<KeyRing, SealError> {
        if keys.is_empty() {
            return Err(SealError::BadKey("no key given".into()));
        }
        let mut unique: Vec<StoreKey> = Vec::with_capacity(keys.len());
        for k in keys {
            if !unique.iter().any(|u| u.id == k.id) {
                unique.push(k);
            }
        }
        Ok(KeyRing { keys: unique })
    }

    /// Parses keys from text: one base64 key per line or comma-separated
    /// (`#` comments and blank lines skipped), the sealing key first.
    pub fn parse(text: &str) -> Result<KeyRing, SealError> {
        let keys = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .flat_map(|l| l.split(','))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(StoreKey::from_base64)
            .collect::<Result<Vec<_>, _>>()?;
        KeyRing::new(keys)
    }

    /// The id of the sealing key.
    pub fn primary_id(&self) -> &str {
        &self.keys[0].id
    }

    /// Ids of every key held.
    pub fn ids(&self) -> Vec<&str> {
        self.keys.iter().map(|k| k.id.as_str()).collect()
    }

    /// Seals `value` for the row `at` under the sealing key.
    pub fn seal(&self, at: &SecretRef, value: &Secret) -> Result<Sealed, SealError> {
        if value.expose().len() > MAX_SECRET_BYTES {
            return Err(SealError::TooLarge);
        }
        let key = &self.keys[0];
        let mut nonce = [0u8; NONCE_BYTES];
        getrandom::fill(&mut nonce).expect("the OS random source works");
        let aad = aad(at, &key.id);
        let ciphertext = key
            .cipher
            .encrypt(
                Nonce::from_slice(&nonce),
                Payload {
                    msg: value.expose(),
                    aad: &aad,
                },
            )
            .map_err(|_| SealError::TooLarge)?;
        Ok(Sealed {
            key_id: key.id.clone(),
            nonce: nonce.to_vec(),
            ciphertext,
        })
    }

    /// Opens a sealed value read from the row `at`.
    pub fn open(&self, at: &SecretRef, sealed: &Sealed) -> Result<Secret, SealError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| SealError::UnknownKey(sealed.key_id.clone()))?;
        if sealed.nonce.len() != NONCE_BYTES {
            return Err(SealError::Tampered);
        }
        let aad = aad(at, &key.id);
        key.cipher
            .decrypt(
                Nonce::from_slice(&sealed.nonce),
                Payload {
                    msg: &sealed.ciphertext,
                    aad: &aad,
                },
            )
            .map(Secret::new)
            .map_err(|_| SealError::Tampered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(keys: &[&str]) -> KeyRing {
        KeyRing::parse(&keys.join("\n")).unwrap()
    }

    fn at() -> SecretRef {
        SecretRef::new("alice", "coda", "coda")
    }

    #[test]
    fn sealed_value_opens_and_hides_the_plaintext() {
        let k = StoreKey::generate_base64();
        let r = ring(&[&k]);
        let v = Secret::new(b"tok-alice-1234567890".to_vec());
        let s = r.seal(&at(), &v).unwrap();
        assert_eq!(s.key_id, r.primary_id());
        assert!(
            !s.ciphertext
                .windows(v.expose().len())
                .any(|w| w == v.expose())
        );
        assert_eq!(r.open(&at(), &s).unwrap(), v);
        // A fresh nonce per seal: the same value never seals the same way twice.
        assert_ne!(r.seal(&at(), &v).unwrap().nonce, s.nonce);
    }

    #[test]
    fn tampered_bytes_do_not_open() {
        let r = ring(&[&StoreKey::generate_base64()]);
        let s = r.seal(&at(), &Secret::new(b"value".to_vec())).unwrap();
        for i in 0..s.ciphertext.len() {
            let mut t = s.clone();
            t.ciphertext[i] ^= 1;
            assert_eq!(r.open(&at(), &t), Err(SealError::Tampered), "byte {i}");
        }
        let mut t = s.clone();
        t.nonce[0] ^= 1;
        assert_eq!(r.open(&at(), &t), Err(SealError::Tampered));
        let mut t = s.clone();
        t.nonce.pop();
        assert_eq!(r.open(&at(), &t), Err(SealError::Tampered));
    }

    #[test]
    fn a_value_moved_to_another_row_does_not_open() {
        let r = ring(&[&StoreKey::generate_base64()]);
        let s = r.seal(&at(), &Secret::new(b"value".to_vec())).unwrap();
        for other in [
            SecretRef::new("bob", "coda", "coda"),
            SecretRef::new("alice", "github", "coda"),
            SecretRef::new("alice", "coda", "other"),
            // Length prefixes: shifting a character between parts changes the AAD.
            SecretRef::new("alic", "ecoda", "coda"),
        ] {
            assert_eq!(r.open(&other, &s), Err(SealError::Tampered), "{other}");
        }
    }

    #[test]
    fn the_wrong_key_does_not_open() {
        let r1 = ring(&[&StoreKey::generate_base64()]);
        let r2 = ring(&[&StoreKey::generate_base64()]);
        let s = r1.seal(&at(), &Secret::new(b"value".to_vec())).unwrap();
        assert!(matches!(r2.open(&at(), &s), Err(SealError::UnknownKey(_))));
        // Even when the key id is forged to name the other key.
        let mut forged = s.clone();
        forged.key_id = r2.primary_id().to_string();
        assert_eq!(r2.open(&at(), &forged), Err(SealError::Tampered));
    }

    #[test]
    fn rotation_ring_opens_both_and_seals_with_the_new_key() {
        let (old, new) = (StoreKey::generate_base64(), StoreKey::generate_base64());
        let before = ring(&[&old]);
        let during = ring(&[&new, &old]);
        let after = ring(&[&new]);
        let v = Secret::new(b"value".to_vec());
        let old_sealed = before.seal(&at(), &v).unwrap();
        assert_eq!(during.open(&at(), &old_sealed).unwrap(), v);
        let resealed = during.seal(&at(), &v).unwrap();
        assert_eq!(resealed.key_id, after.primary_id());
        assert_eq!(after.open(&at(), &resealed).unwrap(), v);
        assert!(after.open(&at(), &old_sealed).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_base64() {
        assert!(StoreKey::from_base64("not base64!").is_err());
        assert!(StoreKey::from_base64("AAAA").is_err());
        let k = StoreKey::generate_base64();
        assert!(StoreKey::from_base64(&k).is_ok());
        assert!(KeyRing::parse("# comment\n\n").is_err());
        // Comma-separated, as MCP_PROXY_STORE_KEY carries a rotation pair.
        let pair = format!("{},{}", StoreKey::generate_base64(), k);
        assert_eq!(KeyRing::parse(&pair).unwrap().ids().len(), 2);
        assert_eq!(
            format!("{:?}", Secret::new(b"x".to_vec())),
            "Secret(<redacted>)"
        );
    }
}
