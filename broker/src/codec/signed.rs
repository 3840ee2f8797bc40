//! Signed messages: a [`WireFormat`] that wraps another and seals every envelope with
//! HMAC-SHA256, so that a worker runs only what a holder of the key sent.
//!
//! For deployments whose Redis is shared with writers that are trusted less than kiq's own
//! processes: anyone who can write to Redis can otherwise enqueue any task with any arguments.
//! Every kiq process that sends or runs tasks (producers, workers, the scheduler, `taskctl
//! serve`) is given the same keys, e.g. `KIQ_SIGNING_KEYS=k2:<secret>,k1:<old secret>`: the
//! first key signs, every key listed verifies, so keys rotate without downtime (add the new one
//! second everywhere, then first, then drop the old).
//!
//! A sealed envelope is `KIQS`, a format byte (1), the key id's length (one byte), the key id,
//! the 32-byte MAC of (format byte, key id length, key id, body), then the body (the inner
//! format's bytes).
//! Records (results) are not sealed: they are not executed. Taskiq's streams are outside this
//! (Python's producers do not sign); what the bridge forwards into kiq's queues is sealed by the
//! worker that forwards it.

use std::fmt;
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use super::value::{CodecError, ValueCodec};
use super::wire::WireFormat;
use crate::model::envelope::Envelope;
use crate::model::record::TaskRecord;

const MAGIC: &[u8; 4] = b"KIQS";
const FORMAT: u8 = 1;
const MAC_LEN: usize = 32;
/// Shortest secret accepted, in bytes: 256 bits, HMAC-SHA256's own strength.
pub const MIN_SECRET_BYTES: usize = 32;

/// The keys messages are signed and verified with: the first signs, all verify.
#[derive(Clone)]
pub struct SigningKeys {
    keys: Vec<(String, Vec<u8>)>,
}

impl fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never the secrets.
        let ids: Vec<&str> = self.keys.iter().map(|(id, _)| id.as_str()).collect();
        f.debug_struct("SigningKeys").field("ids", &ids).finish()
    }
}

impl SigningKeys {
    /// Keys from `id:secret,id:secret,...` (the form of `KIQ_SIGNING_KEYS`): the first signs.
    /// Ids are 1 to 64 characters of letters, digits, `-`, `_` and `.`; secrets are at least
    /// [`MIN_SECRET_BYTES`] bytes (e.g. `openssl rand -hex 32`).
    pub fn parse(spec: &str) -> Result<Self, String> {
        let mut keys: Vec<(String, Vec<u8>)> = Vec::new();
        for part in spec.split(',').map(str::trim).filter(|p| !p.is_empty()) {
            let Some((id, secret)) = part.split_once(':') else {
                return Err("signing keys are id:secret pairs separated by commas".into());
            };
            Self::check(id, secret.as_bytes())?;
            if keys.iter().any(|(k, _)| k == id) {
                return Err(format!("signing key id {id:?} is listed twice"));
            }
            keys.push((id.to_string(), secret.as_bytes().to_vec()));
        }
        if keys.is_empty() {
            return Err("no signing key given (id:secret)".into());
        }
        Ok(SigningKeys { keys })
    }

    /// One key, `id` with `secret`, that signs and verifies.
    pub fn single(id: &str, secret: &[u8]) -> Result<Self, String> {
        Self::check(id, secret)?;
        Ok(SigningKeys {
            keys: vec![(id.to_string(), secret.to_vec())],
        })
    }

    fn check(id: &str, secret: &[u8]) -> Result<(), String> {
        let id_ok = (1..=64).contains(&id.len())
            && id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
        // Neither message shows the id: a pair written the wrong way round (secret:id) would
        // put the secret there.
        if !id_ok {
            return Err(
                "a signing key id must be 1 to 64 letters, digits, '-', '_' or '.' (the form is \
                 id:secret)"
                    .into(),
            );
        }
        if secret.len() < MIN_SECRET_BYTES {
            return Err(format!(
                "a signing key's secret is {} bytes: at least {MIN_SECRET_BYTES} are needed \
                 (e.g. openssl rand -hex 32; the form is id:secret)",
                secret.len()
            ));
        }
        Ok(())
    }

    /// The id of the key that signs.
    pub fn signing_id(&self) -> &str {
        &self.keys[0].0
    }

    /// The ids of every key that verifies.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    fn mac(secret: &[u8], id: &str, body: &[u8]) -> Hmac<Sha256> {
        // HMAC takes keys of any length: this cannot fail.
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
            .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
        // Length-delimited: (format, id length, id, body) has one reading.
        mac.update(&[FORMAT, id.len() as u8]);
        mac.update(id.as_bytes());
        mac.update(body);
        mac
    }

    /// `body` sealed with the signing key.
    pub fn seal(&self, body: &[u8]) -> Vec<u8> {
        let (id, secret) = &self.keys[0];
        let tag = Self::mac(secret, id, body).finalize().into_bytes();
        let mut out = Vec::with_capacity(MAGIC.len() + 2 + id.len() + MAC_LEN + body.len());
        out.extend_from_slice(MAGIC);
        out.push(FORMAT);
        out.push(id.len() as u8);
        out.extend_from_slice(id.as_bytes());
        out.extend_from_slice(&tag);
        out.extend_from_slice(body);
        out
    }

    /// The body of `sealed`, if one of the keys signed it.
    pub fn open<'a>(&self, sealed: &'a [u8]) -> Result<&'a [u8], CodecError> {
        let (id, tag, body) = split(sealed)?;
        let Some((_, secret)) = self.keys.iter().find(|(k, _)| k == id) else {
            return Err(CodecError::BadSignature(format!(
                "signed with key {id:?}, which this process does not have"
            )));
        };
        Self::mac(secret, id, body).verify_slice(tag).map_err(|_| {
            CodecError::BadSignature(format!("the signature of key {id:?} does not match"))
        })?;
        Ok(body)
    }
}

/// The key id, MAC and body of a sealed message.
fn split(sealed: &[u8]) -> Result<(&str, &[u8], &[u8]), CodecError> {
    let unsigned = || CodecError::BadSignature("the message is not signed".into());
    let rest = sealed.strip_prefix(MAGIC.as_slice()).ok_or_else(unsigned)?;
    let (&format, rest) = rest.split_first().ok_or_else(unsigned)?;
    if format != FORMAT {
        return Err(CodecError::BadSignature(format!(
            "unknown signature format {format}"
        )));
    }
    let (&id_len, rest) = rest.split_first().ok_or_else(unsigned)?;
    let id_len = id_len as usize;
    if rest.len() < id_len + MAC_LEN {
        return Err(unsigned());
    }
    let (id, rest) = rest.split_at(id_len);
    let id = std::str::from_utf8(id).map_err(|_| unsigned())?;
    let (tag, body) = rest.split_at(MAC_LEN);
    Ok((id, tag, body))
}

/// A wire format whose envelopes are sealed with [`SigningKeys`]; records pass through.
#[derive(Debug)]
pub struct Signed {
    inner: Arc<dyn WireFormat>,
    keys: SigningKeys,
}

impl Signed {
    /// `inner`'s envelopes, sealed with `keys`.
    pub fn new(inner: Arc<dyn WireFormat>, keys: SigningKeys) -> Self {
        Signed { inner, keys }
    }
}

impl WireFormat for Signed {
    fn name(&self) -> &'static str {
        self.inner.name()
    }

    fn values(&self) -> ValueCodec {
        self.inner.values()
    }

    fn encode_envelope(&self, envelope: &Envelope) -> Result<Vec<u8>, CodecError> {
        Ok(self.keys.seal(&self.inner.encode_envelope(envelope)?))
    }

    fn decode_envelope(&self, bytes: &[u8]) -> Result<Envelope, CodecError> {
        self.inner.decode_envelope(self.keys.open(bytes)?)
    }

    fn task_id(&self, bytes: &[u8]) -> Option<String> {
        // Used to skip cancelled tasks before a batch runs: verified later, when decoded.
        let (_, _, body) = split(bytes).ok()?;
        self.inner.task_id(body)
    }

    fn encode_record(&self, record: &TaskRecord) -> Result<Vec<u8>, CodecError> {
        self.inner.encode_record(record)
    }

    fn decode_record(&self, bytes: &[u8]) -> Result<TaskRecord, CodecError> {
        self.inner.decode_record(bytes)
    }

    fn final_markers(&self) -> Vec<Vec<u8>> {
        self.inner.final_markers()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::KiqWire;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn wire(spec: &str) -> Signed {
        Signed::new(Arc::new(KiqWire), SigningKeys::parse(spec).unwrap())
    }

    fn envelope() -> Envelope {
        Envelope {
            id: "t1".into(),
            task: "app.pay".into(),
            queue: "q".into(),
            args: vec![0x91, 0x01],
            ..Envelope::default()
        }
    }

    #[test]
    fn sealed_envelopes_open_with_any_listed_key_and_nothing_else() {
        let old = wire("k1:0123456789abcdef0123456789abcdef");
        let rotated =
            wire("k2:fedcba9876543210fedcba9876543210,k1:0123456789abcdef0123456789abcdef");
        let stranger = wire("k1:ffffffffffffffffffffffffffffffff");
        let sealed = old.encode_envelope(&envelope()).unwrap();
        assert_eq!(rotated.decode_envelope(&sealed).unwrap(), envelope());
        assert_eq!(old.task_id(&sealed).as_deref(), Some("t1"));
        assert!(matches!(
            stranger.decode_envelope(&sealed),
            Err(CodecError::BadSignature(_))
        ));
        // The new key signs after rotation; a process with only the old one refuses it.
        let newer = rotated.encode_envelope(&envelope()).unwrap();
        assert!(old.decode_envelope(&newer).is_err());

        // Unsigned, tampered, truncated: all refused as bad signatures, none panics.
        let plain = KiqWire.encode_envelope(&envelope()).unwrap();
        let mut tampered = sealed.clone();
        let last = tampered.len() - 1;
        tampered[last] ^= 1;
        for bad in [
            plain,
            tampered,
            sealed[..sealed.len() / 2].to_vec(),
            Vec::new(),
        ] {
            assert!(
                matches!(old.decode_envelope(&bad), Err(CodecError::BadSignature(_))),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn keys_are_checked_and_never_printed() {
        assert!(SigningKeys::parse("").is_err());
        assert!(SigningKeys::parse("k1:short")
            .unwrap_err()
            .contains("at least 32"));
        // Written the wrong way round, the secret is not echoed.
        let swapped = SigningKeys::parse("0123456789abcdef0123456789abcdef:k1").unwrap_err();
        assert!(!swapped.contains("0123456789abcdef"), "{swapped}");
        assert!(SigningKeys::parse("no-colon").is_err());
        assert!(SigningKeys::parse("bad id:0123456789abcdef0123456789abcdef").is_err());
        let twice = "k:0123456789abcdef0123456789abcdef,k:0123456789abcdef0123456789abcdef";
        assert!(SigningKeys::parse(twice).unwrap_err().contains("twice"));
        let keys = SigningKeys::single("k1", SECRET).unwrap();
        assert_eq!(keys.signing_id(), "k1");
        let shown = format!("{keys:?}");
        assert!(
            shown.contains("k1") && !shown.contains("0123456789"),
            "{shown}"
        );
    }
}
