//! `JwtVerifier::verify` (JWKS of two Ed25519 keys fed directly, an HS256
//! secret; no network) on arbitrary tokens, on tokens the target signs
//! over arbitrary claims, and on signed tokens then mutated. Oracles:
//! - never accepted without a valid signature: an accepted token's
//!   signing input verifies (ed25519-dalek, or HMAC-SHA256 when its
//!   header says HS256) under one of the keys, checked here apart from
//!   `jsonwebtoken`;
//! - a signed token's claims are read as the module documents, by a
//!   reference written here on serde_json: `exp` a whole number of
//!   seconds not past (60 s leeway), `nbf` (if any) a number not ahead,
//!   `aud` "aud1" or an array of strings holding it, `sub` a string (or
//!   a service token's `common_name` when it is empty), no claim that is
//!   read given twice; accepted exactly when the reference accepts, with
//!   the same subject.
#![no_main]

use std::sync::OnceLock;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use ed25519_dalek::{Signer, SigningKey};
use hmac::{Hmac, KeyInit, Mac};
use libfuzzer_sys::fuzz_target;
use mcp_sidecar::auth::jwt::{JwtConfig, JwtVerifier, TokenHeader};
use serde_json::Value;

const SECRET: &[u8] = b"an HS256 secret of the fuzz target, 32+ bytes";
const AUD: &str = "aud1";

fn b64(b: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)
}

fn keys() -> &'static [SigningKey; 2] {
    static K: OnceLock<[SigningKey; 2]> = OnceLock::new();
    K.get_or_init(|| {
        [
            SigningKey::from_bytes(&[7; 32]),
            SigningKey::from_bytes(&[9; 32]),
        ]
    })
}

fn verifier() -> &'static JwtVerifier {
    static V: OnceLock<JwtVerifier> = OnceLock::new();
    V.get_or_init(|| {
        let [k1, k2] = keys();
        let jwks = format!(
            r#"{{"keys":[{{"kty":"OKP","crv":"Ed25519","kid":"k1","x":"{}"}},{{"kty":"OKP","crv":"Ed25519","kid":"k2","x":"{}"}}]}}"#,
            b64(k1.verifying_key().as_bytes()),
            b64(k2.verifying_key().as_bytes())
        );
        let config = JwtConfig {
            jwks_url: Some("http://127.0.0.1:9/jwks".parse().unwrap()),
            secret: Some(SECRET.to_vec()),
            issuers: vec![],
            audiences: vec![AUD.into()],
            header: TokenHeader::Bearer,
            jwks_min_refetch: Duration::from_secs(86_400),
        };
        mcp_sidecar::fuzzing::jwt_verifier(config, jwks.as_bytes()).unwrap()
    })
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn hmac(msg: &[u8]) -> Vec<u8> {
    let mut m = <Hmac<sha2::Sha256> as KeyInit>::new_from_slice(SECRET).unwrap();
    m.update(msg);
    m.finalize().into_bytes().to_vec()
}

/// Whether `token` carries a valid signature by one of the keys.
fn reference_signed(token: &str) -> bool {
    let Some((message, sig)) = token.rsplit_once('.') else {
        return false;
    };
    let Ok(sig) = base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(sig) else {
        return false;
    };
    let alg = message
        .split('.')
        .next()
        .and_then(|h| {
            base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(h)
                .ok()
        })
        .and_then(|h| serde_json::from_slice::<Value>(&h).ok())
        .and_then(|h| h.get("alg").and_then(Value::as_str).map(String::from));
    match alg.as_deref() {
        Some("HS256") => hmac(message.as_bytes()) == sig,
        Some("EdDSA") => {
            let Ok(sig) = ed25519_dalek::Signature::from_slice(&sig) else {
                return false;
            };
            keys().iter().any(|k| {
                k.verifying_key()
                    .verify_strict(message.as_bytes(), &sig)
                    .is_ok()
            })
        }
        _ => false,
    }
}

/// The top-level member names of a JSON object, duplicates kept.
fn member_names(payload: &[u8]) -> Option<Vec<String>> {
    struct Names;
    impl<'de> serde::de::Visitor<'de> for Names {
        type Value = Vec<String>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: serde::de::MapAccess<'de>>(
            self,
            mut m: A,
        ) -> Result<Vec<String>, A::Error> {
            let mut names = Vec::new();
            while let Some(k) = m.next_key::<String>()? {
                m.next_value::<serde::de::IgnoredAny>()?;
                names.push(k);
            }
            Ok(names)
        }
    }
    let mut de = serde_json::Deserializer::from_slice(payload);
    let names = serde::Deserializer::deserialize_map(&mut de, Names).ok()?;
    de.end().ok()?;
    Some(names)
}

/// What a signed token with this payload is verified as: its subject.
fn reference_claims(payload: &[u8]) -> Option<String> {
    let names = member_names(payload)?;
    let read = [
        "exp",
        "nbf",
        "sub",
        "iss",
        "aud",
        "common_name",
        "email",
        "scope",
        "scp",
    ];
    for r in read {
        if names.iter().filter(|n| *n == r).count() > 1 {
            return None;
        }
    }
    // Only the members the verifier reads are read: another one that no
    // `Value` holds (`"other":1e400`) is skipped by the verifier too, and
    // took this reference's whole parse down with it (the second run).
    let raw: std::collections::BTreeMap<String, &serde_json::value::RawValue> =
        serde_json::from_slice(payload).ok()?;
    let mut members = serde_json::Map::new();
    for (name, value) in raw {
        if read.contains(&name.as_str()) {
            members.insert(name, serde_json::from_str(value.get()).ok()?);
        }
    }
    let v = Value::Object(members);
    let exp = v.get("exp")?.as_u64()?;
    if exp.saturating_add(60) < now() {
        return None;
    }
    if let Some(nbf) = v.get("nbf") {
        let nbf = match nbf.as_u64() {
            Some(n) => n,
            None => {
                let f = nbf.as_f64()?;
                if !(f.is_finite() && f >= 0.0 && f < u64::MAX as f64) {
                    return None;
                }
                f.round() as u64
            }
        };
        if nbf > now() + 60 {
            return None;
        }
    }
    match v.get("aud")? {
        Value::String(a) if a == AUD => {}
        Value::Array(a) if a.iter().all(Value::is_string) && a.iter().any(|x| x == AUD) => {}
        _ => return None,
    }
    let opt_str = |k: &str| match v.get(k) {
        None | Some(Value::Null) => Some(None),
        Some(Value::String(s)) => Some(Some(s.clone())),
        Some(_) => None,
    };
    opt_str("email")?;
    opt_str("scope")?;
    match v.get("scp") {
        None | Some(Value::Null) | Some(Value::String(_)) => {}
        Some(Value::Array(a)) if a.iter().all(Value::is_string) => {}
        Some(_) => return None,
    }
    let sub = match v.get("sub") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(_) => return None,
    };
    let common_name = opt_str("common_name")?;
    let subject = if !sub.is_empty() {
        if sub.starts_with("service-token:") {
            return None;
        }
        sub
    } else {
        common_name.filter(|c| !c.is_empty())?
    };
    (subject.len() <= 512).then_some(subject)
}

fn verify(token: &str) -> Option<String> {
    let fut = std::pin::pin!(verifier().verify(token));
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match fut.poll(&mut cx) {
        std::task::Poll::Ready(r) => r.ok().map(|v| v.subject),
        std::task::Poll::Pending => panic!("verify waited: it must not fetch"),
    }
}

use std::future::Future;

/// A claims object from (name, value) choices: the names the verifier
/// reads (and one it does not), each value a likely one, an odd type, or
/// the fuzzer's own text; names may repeat.
fn built_claims(members: &[(u8, u8, String)]) -> Vec<u8> {
    const NAMES: &[&str] = &[
        "exp",
        "nbf",
        "sub",
        "aud",
        "iss",
        "common_name",
        "email",
        "scope",
        "scp",
        "other",
    ];
    let t = now();
    let mut out = String::from("{");
    for (i, (name, value, raw)) in members.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        let name = NAMES[usize::from(*name) % NAMES.len()];
        let value = match value % 24 {
            0 => (t + 600).to_string(),
            1 => t.saturating_sub(1000).to_string(),
            2 => format!("{}.5", t + 600),
            3 => "1e400".into(),
            4 => "-1".into(),
            5 => format!("\"{}\"", t + 600),
            6 => "\"aud1\"".into(),
            7 => "[\"x\",\"aud1\"]".into(),
            8 => "[\"aud1\",1]".into(),
            9 => "\"alice\"".into(),
            10 => "\"\"".into(),
            11 => "null".into(),
            12 => "\"service-token:x\"".into(),
            13 => "[\"a\",\"b c\"]".into(),
            14 => "{}".into(),
            15 => "true".into(),
            16 => format!("\"{}\"", "a".repeat(513)),
            17 => "18446744073709551615".into(),
            18 => "18446744073709551616".into(),
            19 => (t + 10_000).to_string(),
            _ => serde_json::to_string(raw).unwrap(),
        };
        out.push_str(&format!("\"{name}\":{value}"));
    }
    out.push('}');
    out.into_bytes()
}

fuzz_target!(
    |input: (u8, Vec<u8>, Vec<u8>, Vec<(u16, u8)>, Vec<(u8, u8, String)>)| {
        let (mode, header_extra, payload, mutations, members) = input;
        let payload = if members.is_empty() {
            payload
        } else {
            built_claims(&members)
        };
        if mode % 4 == 0 {
            // Any text as a token.
            let token = String::from_utf8_lossy(&payload);
            if let Some(subject) = verify(&token) {
                assert!(
                    reference_signed(&token),
                    "unsigned token accepted as {subject:?}: {token:?}"
                );
            }
            return;
        }
        // A token signed over these claims, with k1, k2 (by kid, or none) or HS256.
        let alg = if mode % 4 == 3 { "HS256" } else { "EdDSA" };
        let kid = match mode / 4 % 3 {
            0 => ",\"kid\":\"k1\"",
            1 => ",\"kid\":\"k2\"",
            _ => "",
        };
        // Only a token then mutated has the fuzzer's header members too.
        let extra = if mode % 4 == 2 {
            String::from_utf8_lossy(&header_extra).into_owned()
        } else {
            String::new()
        };
        let header = format!("{{\"alg\":\"{alg}\",\"typ\":\"JWT\"{kid}{extra}}}");
        let message = format!("{}.{}", b64(header.as_bytes()), b64(&payload));
        let sig = if alg == "HS256" {
            hmac(message.as_bytes())
        } else {
            let key = &keys()[usize::from(kid == ",\"kid\":\"k2\"")];
            key.sign(message.as_bytes()).to_bytes().to_vec()
        };
        let mut token = format!("{message}.{}", b64(&sig)).into_bytes();
        // The fuzzer's header members may leave the header unreadable:
        // only the signature oracle holds then, mutated or not (this was
        // the first failure of this target, a header ending `"k1"|\n}`).
        if mode % 4 == 2 {
            for (at, byte) in mutations {
                let at = usize::from(at) % (token.len() + 1);
                match byte % 3 {
                    0 if at < token.len() => token[at] = byte,
                    1 => token.insert(at, byte),
                    _ if at < token.len() => {
                        token.remove(at);
                    }
                    _ => {}
                }
            }
            let token = String::from_utf8_lossy(&token);
            if let Some(subject) = verify(&token) {
                assert!(
                    reference_signed(&token),
                    "mutated token accepted as {subject:?}: {token:?}"
                );
            }
            return;
        }
        let token = String::from_utf8(token).unwrap();
        let got = verify(&token);
        let want = reference_claims(&payload);
        // Without a kid, k1 and k2 both fit EdDSA: refused by design.
        let want = if alg == "EdDSA" && kid.is_empty() {
            None
        } else {
            want
        };
        assert_eq!(
            got,
            want,
            "claims {:?} read differently",
            String::from_utf8_lossy(&payload)
        );
    }
);
