//! Authenticated actions: a key shared by the vehicle and its viewers, and an HMAC-SHA256 of
//! each action's exact envelope bytes sent as the message's third part.
//!
//! The MAC covers the whole envelope, so the sequence number, the expiry, the vehicle id, the
//! sender and the command cannot be changed without the key; replays of a captured action are
//! then stopped by the vehicle's sequence, id and expiry checks, which only ever see
//! authenticated values. `docs/protocol.md` section 5.5 gives the same rules for other
//! languages.

use hmac::{Hmac, Mac};
use sha2::Sha256;
use std::io::Read as _;
use std::path::{Path, PathBuf};

type HmacSha256 = Hmac<Sha256>;

/// Bytes of key material: as long as the hash output, the size HMAC-SHA256 is designed for.
pub const ACTION_KEY_BYTES: usize = 32;
/// Bytes of the MAC, the third part of an authenticated action.
pub const ACTION_MAC_BYTES: usize = 32;
/// A key file is 64 hex digits and a newline; anything much larger is not a key file.
const KEY_FILE_MAX_BYTES: u64 = 4096;

/// The shared secret that authenticates actions. Its bytes are never printed.
#[derive(Clone)]
pub struct ActionKey {
    bytes: [u8; ACTION_KEY_BYTES],
}

impl std::fmt::Debug for ActionKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ActionKey(<secret>)")
    }
}

/// Why a key could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("reading action key {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("action key {path} is not a regular file")]
    NotAFile { path: PathBuf },
    #[error(
        "action key {path} is accessible to group or others (mode {mode:03o}); it must be readable by \
         its owner only: chmod 600 {path}"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("action key {path}: {reason}")]
    Format { path: PathBuf, reason: String },
    #[error("action key: {0}")]
    Bytes(String),
}

/// Why an action's authentication failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No third part: the sender has no key (or an old client).
    #[error("no MAC: this vehicle accepts only actions authenticated with its key (docs/protocol.md 5.5)")]
    Missing,
    /// A third part that is not 32 bytes long.
    #[error("the MAC part is {0} bytes, expected {ACTION_MAC_BYTES}")]
    Length(usize),
    /// The MAC does not match: another key, or the envelope was changed on the way.
    #[error("the MAC does not match the envelope (wrong key, or the message was altered)")]
    Mismatch,
}

impl ActionKey {
    /// A key from its raw bytes (exactly [`ACTION_KEY_BYTES`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, KeyError> {
        let bytes: [u8; ACTION_KEY_BYTES] = bytes.try_into().map_err(|_| {
            KeyError::Bytes(format!("{} bytes of key material, expected {ACTION_KEY_BYTES}", bytes.len()))
        })?;
        Ok(Self { bytes })
    }

    /// A key from its file form: 64 hex digits, surrounding whitespace ignored.
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let digits = text.trim();
        if digits.len() != 2 * ACTION_KEY_BYTES {
            return Err(KeyError::Bytes(format!(
                "{} characters, expected {} hex digits",
                digits.len(),
                2 * ACTION_KEY_BYTES
            )));
        }
        let mut bytes = [0u8; ACTION_KEY_BYTES];
        for (byte, pair) in bytes.iter_mut().zip(digits.as_bytes().chunks_exact(2)) {
            let pair = std::str::from_utf8(pair).map_err(|_| KeyError::Bytes("not hex".into()))?;
            *byte =
                u8::from_str_radix(pair, 16).map_err(|_| KeyError::Bytes(format!("{pair:?} is not hex")))?;
        }
        Ok(Self { bytes })
    }

    /// Reads a key file (as written by `scripts/action-key.sh generate`), refusing one that
    /// group or others may read or write: a key anyone on the machine can read authenticates
    /// nothing.
    pub fn load(path: &Path) -> Result<Self, KeyError> {
        use std::os::unix::fs::PermissionsExt as _;
        let read_error = |source| KeyError::Read { path: path.to_path_buf(), source };
        let file = std::fs::File::open(path).map_err(read_error)?;
        // The checks are made on the opened file, so a file swapped in between cannot pass them.
        let meta = file.metadata().map_err(read_error)?;
        if !meta.is_file() {
            return Err(KeyError::NotAFile { path: path.to_path_buf() });
        }
        let mode = meta.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(KeyError::Permissions { path: path.to_path_buf(), mode });
        }
        let mut text = String::new();
        file.take(KEY_FILE_MAX_BYTES).read_to_string(&mut text).map_err(|e| KeyError::Format {
            path: path.to_path_buf(),
            reason: format!("not a text file of hex digits ({e})"),
        })?;
        Self::from_hex(&text).map_err(|e| KeyError::Format {
            path: path.to_path_buf(),
            reason: match e {
                KeyError::Bytes(reason) => reason,
                other => other.to_string(),
            },
        })
    }

    /// The key in its file form (64 lower-case hex digits).
    pub fn to_hex(&self) -> String {
        self.bytes.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// HMAC-SHA256 of `envelope` under this key.
    pub fn mac(&self, envelope: &[u8]) -> [u8; ACTION_MAC_BYTES] {
        let mut mac = self.hmac();
        mac.update(envelope);
        mac.finalize().into_bytes().into()
    }

    /// Checks `mac` against `envelope` in constant time (the comparison takes as long whether
    /// the first or the last byte differs, so a forger learns nothing from timing).
    pub fn verify(&self, envelope: &[u8], mac: &[u8]) -> Result<(), AuthError> {
        if mac.len() != ACTION_MAC_BYTES {
            return Err(AuthError::Length(mac.len()));
        }
        let mut expected = self.hmac();
        expected.update(envelope);
        expected.verify_slice(mac).map_err(|_| AuthError::Mismatch)
    }

    fn hmac(&self) -> HmacSha256 {
        // HMAC takes keys of any length; `new_from_slice` cannot fail for it.
        match HmacSha256::new_from_slice(&self.bytes) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC accepts keys of every length"),
        }
    }
}

/// An action message split into what [`crate::decode`] reads (`[topic, envelope]`) and its
/// MAC part, if it has one. Messages of other part counts are returned whole (they are
/// malformed either way, and `decode` says how).
pub fn split_action_mac<'p, 'a>(parts: &'p [&'a [u8]]) -> (&'p [&'a [u8]], Option<&'a [u8]>) {
    match parts {
        [_, _, mac] => (&parts[..2], Some(mac)),
        _ => (parts, None),
    }
}

/// Checks the MAC of an action message `[topic, envelope, mac]` under `key`.
pub fn verify_action(parts: &[&[u8]], key: &ActionKey) -> Result<(), AuthError> {
    match split_action_mac(parts) {
        ([_, envelope], Some(mac)) => key.verify(envelope, mac),
        _ => Err(AuthError::Missing),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "tests")]
    use super::*;

    /// Pins the construction to standard HMAC-SHA256 over the raw key bytes, which is what
    /// other languages' libraries compute: the expected value is Python's
    /// `hmac.new(bytes(range(32)), b"what do ya want for nothing?", "sha256").hexdigest()`.
    #[test]
    fn matches_the_standard_hmac_sha256_of_other_languages() {
        let key = ActionKey::from_bytes(&(0u8..32).collect::<Vec<_>>()).unwrap();
        let mac = key.mac(b"what do ya want for nothing?");
        let hex: String = mac.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex, "099805f4ac310786968565c098db515cc50862b420ae31e20238312344bed36a");
    }

    #[test]
    fn verify_accepts_its_own_mac_and_nothing_else() {
        let key = ActionKey::from_hex(&"ab".repeat(32)).unwrap();
        let other = ActionKey::from_hex(&"cd".repeat(32)).unwrap();
        let mac = key.mac(b"envelope");
        assert_eq!(key.verify(b"envelope", &mac), Ok(()));
        assert_eq!(key.verify(b"envelopf", &mac), Err(AuthError::Mismatch));
        assert_eq!(other.verify(b"envelope", &mac), Err(AuthError::Mismatch));
        assert_eq!(key.verify(b"envelope", &mac[..31]), Err(AuthError::Length(31)));
        let mut flipped = mac;
        flipped[31] ^= 1;
        assert_eq!(key.verify(b"envelope", &flipped), Err(AuthError::Mismatch));
    }

    #[test]
    fn hex_form_round_trips_and_bad_text_is_refused() {
        let key = ActionKey::from_hex(&format!("  {}\n", "0F".repeat(32))).unwrap();
        assert_eq!(key.to_hex(), "0f".repeat(32));
        assert!(ActionKey::from_hex(&"0f".repeat(31)).is_err());
        assert!(ActionKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(ActionKey::from_hex(&"é".repeat(32)).is_err());
        assert!(format!("{key:?}").contains("secret") && !format!("{key:?}").contains("0f"));
    }

    #[test]
    fn load_refuses_keys_others_can_read() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("ads-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("action.key");
        std::fs::write(&path, format!("{}\n", "42".repeat(32))).unwrap();
        for (mode, ok) in [(0o600, true), (0o400, true), (0o640, false), (0o604, false), (0o620, false)] {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
            let result = ActionKey::load(&path);
            assert_eq!(result.is_ok(), ok, "mode {mode:o}: {result:?}");
            if let Err(e) = result {
                assert!(matches!(e, KeyError::Permissions { .. }), "{e}");
                assert!(e.to_string().contains("chmod 600"), "{e}");
            }
        }
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, "not a key\n").unwrap();
        assert!(matches!(ActionKey::load(&path), Err(KeyError::Format { .. })));
        assert!(matches!(ActionKey::load(&dir), Err(KeyError::NotAFile { .. })));
        assert!(matches!(ActionKey::load(&dir.join("missing")), Err(KeyError::Read { .. })));
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn split_and_verify_action_parts() {
        let key = ActionKey::from_hex(&"11".repeat(32)).unwrap();
        let mac = key.mac(b"env");
        let parts: [&[u8]; 3] = [b"action", b"env", &mac];
        assert_eq!(split_action_mac(&parts), (&parts[..2], Some(&mac[..])));
        assert_eq!(verify_action(&parts, &key), Ok(()));
        assert_eq!(verify_action(&parts[..2], &key), Err(AuthError::Missing));
        assert_eq!(verify_action(&[b"action"], &key), Err(AuthError::Missing));
    }
}
