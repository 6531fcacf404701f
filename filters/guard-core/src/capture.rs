//! Opt-in capture of what a filter judged (request and answer bodies, size-capped), encrypted
//! with ChaCha20-Poly1305 under a key from the VM environment ([`KEY_ENV`], never from plugin
//! config), so an auditor with the key can replay every decision and nobody without it reads the
//! data in the logs.
//!
//! ```
//! # fn main() -> Result<(), String> {
//! use guard_core::capture::{open, Sealer};
//! let mut s = Sealer::new(b"an audit capture key of any length", 7);
//! let sealed = s.seal(br#"{"request":"hello"}"#);
//! assert_eq!(open(b"an audit capture key of any length", &sealed)?, br#"{"request":"hello"}"#);
//! assert!(open(b"another key", &sealed).is_err());
//! # Ok(())
//! # }
//! ```

use base64::Engine as _;
use chacha20poly1305::aead::{Aead, KeyInit};
use chacha20poly1305::{ChaCha20Poly1305, Key, Nonce};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Environment variable of the VM holding the capture key (any length; SHA-256 makes the
/// 32-byte cipher key).
pub const KEY_ENV: &str = "GUARD_CAPTURE_KEY";
/// Shortest accepted key material.
pub const MIN_KEY_BYTES: usize = 16;
const ALG: &str = "chacha20poly1305";

fn cipher(material: &[u8]) -> ChaCha20Poly1305 {
    let key = Sha256::digest(material);
    ChaCha20Poly1305::new(Key::from_slice(&key))
}

/// Encrypts captures; one per VM. Nonces are a random 32-bit prefix per sealer and a counter,
/// so they never repeat under one key within a VM.
pub struct Sealer {
    cipher: ChaCha20Poly1305,
    prefix: u32,
    counter: u64,
}

impl std::fmt::Debug for Sealer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sealer").finish_non_exhaustive()
    }
}

impl Sealer {
    pub fn new(material: &[u8], prefix: u32) -> Self {
        Sealer {
            cipher: cipher(material),
            prefix,
            counter: 0,
        }
    }

    /// A sealer keyed from the VM environment, if the key is there.
    pub fn from_env(prefix: u32) -> Option<Self> {
        let key = std::env::var(KEY_ENV).ok()?;
        (key.len() >= MIN_KEY_BYTES).then(|| Sealer::new(key.as_bytes(), prefix))
    }

    /// `{"alg","nonce","data"}` (base64) of the encrypted plaintext.
    pub fn seal(&mut self, plaintext: &[u8]) -> Value {
        self.counter = self.counter.wrapping_add(1);
        let mut n = [0u8; 12];
        for (slot, b) in n.iter_mut().zip(
            self.prefix
                .to_be_bytes()
                .iter()
                .chain(self.counter.to_be_bytes().iter()),
        ) {
            *slot = *b;
        }
        let b64 = base64::engine::general_purpose::STANDARD;
        match self.cipher.encrypt(Nonce::from_slice(&n), plaintext) {
            Ok(ct) => json!({"alg": ALG, "nonce": b64.encode(n), "data": b64.encode(ct)}),
            Err(_) => json!({"alg": ALG, "error": "encryption failed"}),
        }
    }
}

/// Decrypt a sealed capture.
pub fn open(material: &[u8], sealed: &Value) -> Result<Vec<u8>, String> {
    if sealed.get("alg").and_then(Value::as_str) != Some(ALG) {
        return Err(format!("not a {ALG} capture"));
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let field = |k: &str| -> Result<Vec<u8>, String> {
        let s = sealed
            .get(k)
            .and_then(Value::as_str)
            .ok_or_else(|| format!("capture has no {k}"))?;
        b64.decode(s).map_err(|e| format!("capture {k}: {e}"))
    };
    let nonce = field("nonce")?;
    if nonce.len() != 12 {
        return Err("capture nonce is not 12 bytes".to_string());
    }
    cipher(material)
        .decrypt(Nonce::from_slice(&nonce), field("data")?.as_slice())
        .map_err(|_| "capture does not decrypt (another key, or edited)".to_string())
}
