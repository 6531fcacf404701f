//! # pii-redact
//!
//! Keeps personal data and secrets out of the model and off the client's screen, in both
//! directions, streamed answers included.
//!
//! - [`patterns`]: the built-in entity catalogue (e-mail, phone, card, IBAN, SSN, IP, API keys
//!   and secrets, private keys, passwords), each pattern with the check that confirms it.
//! - [`validate`]: the checks (Luhn and issuer ranges, IBAN mod-97 and lengths, SSN rules, phone
//!   digit counts per country, GitHub token CRC, entropy).
//! - [`engine`]: settings and the compiled policy (one multi-pattern regex for every pattern,
//!   operator entities and dictionaries included), the one-pass scan, and for streams how much
//!   text is final.
//! - [`redact`]: actions (redact, mask, keyed hash, numbered placeholders restored in the answer,
//!   block, allow) and the per-request placeholder vault.
//! - [`stream`]: whole texts, tool-call arguments, and the hold-back scanner for streams.
//! - [`filter`]: the proxy-wasm filter.
//!
//! ```
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use pii_redact::engine::{Direction, Engine};
//! use pii_redact::redact::{Stats, TextKind, Vault};
//! use pii_redact::stream::{rewrite, Buffers};
//!
//! let engine = Engine::default_policy()?;
//! let mut scratch = engine.scratch();
//! let mut bufs = Buffers::default();
//! let mut vault = Vault::new(16);
//! let mut stats = Stats::default();
//! let text = "Mail jane.doe@example.com please";
//! let req = rewrite(&engine, &mut scratch, &mut bufs, Direction::Request, text,
//!                   TextKind::Plain, &mut vault, &mut stats);
//! assert_eq!(req.as_deref(), Some("Mail <EMAIL_1> please"));
//! let answer = "Done, I wrote to <EMAIL_1>.";
//! let back = rewrite(&engine, &mut scratch, &mut bufs, Direction::Response, answer,
//!                    TextKind::Plain, &mut vault, &mut stats);
//! assert_eq!(back.as_deref(), Some("Done, I wrote to jane.doe@example.com."));
//! # Ok(())
//! # }
//! ```

pub mod engine;
pub mod filter;
pub mod patterns;
pub mod redact;
pub mod stream;
pub mod validate;

// The proxy-wasm entry point; off (`default-features = false`) when another module links
// this crate (the combined filter, wasm benchmarks).
#[cfg(feature = "export")]
guard_host::export_guard_filter!(crate::filter::PiiRedact);
