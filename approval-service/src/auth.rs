//! Who is calling: the filter (client token), approvers (bearer tokens, console sessions,
//! or identity headers from a trusted Envoy), sessions and CSRF tokens.

use std::collections::HashMap;
use std::io::Read as _;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use hyper::HeaderMap;
use sha2::{Digest as _, Sha256};

/// Session cookie name.
pub const SESSION_COOKIE: &str = "approval_session";
/// Pre-login cookie (double-submit CSRF token of the login form).
pub const LOGIN_COOKIE: &str = "approval_login";
/// Sessions live this long.
pub const SESSION_TTL: Duration = Duration::from_secs(12 * 3600);
/// At most this many sessions in memory (the oldest go first).
const MAX_SESSIONS: usize = 10_000;

/// An approver: name and roles.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Approver {
    pub name: String,
    pub roles: Vec<String>,
}

/// How an approver authenticated (decides whether a form needs a CSRF token).
#[derive(Clone, Debug)]
pub enum Via {
    /// `authorization: Bearer` (not sent by browsers on their own: no CSRF risk).
    Bearer,
    /// Session cookie: the session's CSRF token.
    Session { csrf: String },
    /// Trusted identity headers: a CSRF token derived from the name.
    Headers { csrf: String },
}

impl Via {
    pub fn csrf(&self) -> Option<&str> {
        match self {
            Via::Bearer => None,
            Via::Session { csrf } | Via::Headers { csrf } => Some(csrf),
        }
    }
}

/// An authenticated approver.
#[derive(Clone, Debug)]
pub struct Identity {
    pub approver: Approver,
    pub via: Via,
}

struct Session {
    approver: Approver,
    csrf: String,
    created: Instant,
}

/// Authentication settings and console sessions.
pub struct Auth {
    client_token: Option<String>,
    approvers: Vec<(Approver, String)>,
    pii_roles: Vec<String>,
    trust_identity_headers: bool,
    /// Key for CSRF tokens of header identities.
    secret: [u8; 32],
    sessions: Mutex<HashMap<String, Session>>,
}

impl Auth {
    pub fn new(
        client_token: Option<String>,
        approvers: Vec<(Approver, String)>,
        pii_roles: Vec<String>,
        trust_identity_headers: bool,
    ) -> anyhow::Result<Auth> {
        let mut secret = [0u8; 32];
        fill_random(&mut secret)?;
        Ok(Auth {
            client_token,
            approvers,
            pii_roles,
            trust_identity_headers,
            secret,
            sessions: Mutex::new(HashMap::new()),
        })
    }

    fn sessions(&self) -> MutexGuard<'_, HashMap<String, Session>> {
        self.sessions.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether the request carries the client token (or none is configured).
    pub fn is_client(&self, headers: &HeaderMap) -> bool {
        match &self.client_token {
            None => true,
            Some(expected) => headers
                .get("x-approval-client-token")
                .is_some_and(|v| ct_eq(v.as_bytes(), expected.as_bytes())),
        }
    }

    /// Whether `roles` may see the unmasked excerpt.
    pub fn sees_pii(&self, approver: &Approver) -> bool {
        approver.roles.iter().any(|r| self.pii_roles.contains(r))
    }

    /// The approver owning `token`.
    pub fn approver_by_token(&self, token: &str) -> Option<Approver> {
        let mut found = None;
        // Compare against every token (no early exit on a match).
        for (approver, expected) in &self.approvers {
            if ct_eq(token.as_bytes(), expected.as_bytes()) && found.is_none() {
                found = Some(approver.clone());
            }
        }
        found
    }

    /// Bearer token or trusted identity headers (the JSON API).
    pub fn approver_from_headers(&self, headers: &HeaderMap) -> Option<Identity> {
        if let Some(token) = header_str(headers, "authorization").and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        }) {
            return self
                .approver_by_token(token.trim())
                .map(|approver| Identity {
                    approver,
                    via: Via::Bearer,
                });
        }
        if self.trust_identity_headers {
            let name = header_str(headers, "x-approver")?.trim();
            if name.is_empty() {
                return None;
            }
            let roles = header_str(headers, "x-approver-roles")
                .map(split_roles)
                .unwrap_or_default();
            let csrf = self.header_csrf(name);
            return Some(Identity {
                approver: Approver {
                    name: name.to_owned(),
                    roles,
                },
                via: Via::Headers { csrf },
            });
        }
        None
    }

    /// Console: bearer, identity headers or the session cookie.
    pub fn approver_for_console(&self, headers: &HeaderMap) -> Option<Identity> {
        if let Some(identity) = self.approver_from_headers(headers) {
            return Some(identity);
        }
        let id = cookie(headers, SESSION_COOKIE)?;
        let mut sessions = self.sessions();
        let session = sessions.get(id)?;
        if session.created.elapsed() > SESSION_TTL {
            sessions.remove(id);
            return None;
        }
        Some(Identity {
            approver: session.approver.clone(),
            via: Via::Session {
                csrf: session.csrf.clone(),
            },
        })
    }

    /// Starts a session; returns its id.
    pub fn login(&self, approver: Approver) -> anyhow::Result<String> {
        let id = random_hex(32)?;
        let csrf = random_hex(32)?;
        let mut sessions = self.sessions();
        sessions.retain(|_, s| s.created.elapsed() <= SESSION_TTL);
        while sessions.len() >= MAX_SESSIONS {
            let oldest = sessions
                .iter()
                .min_by_key(|(_, s)| s.created)
                .map(|(k, _)| k.clone());
            match oldest {
                Some(k) => sessions.remove(&k),
                None => break,
            };
        }
        sessions.insert(
            id.clone(),
            Session {
                approver,
                csrf,
                created: Instant::now(),
            },
        );
        Ok(id)
    }

    /// Ends the session named by the request's cookie.
    pub fn logout(&self, headers: &HeaderMap) {
        if let Some(id) = cookie(headers, SESSION_COOKIE) {
            self.sessions().remove(id);
        }
    }

    fn header_csrf(&self, name: &str) -> String {
        let mut h = Sha256::new();
        h.update(self.secret);
        h.update(b"csrf:");
        h.update(name.as_bytes());
        hex(&h.finalize())
    }
}

/// Splits `a+b`, `a,b` or `a b` into roles.
pub fn split_roles(s: &str) -> Vec<String> {
    s.split(['+', ',', ' '])
        .map(str::trim)
        .filter(|r| !r.is_empty())
        .map(str::to_owned)
        .collect()
}

pub fn header_str<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// The value of cookie `name`.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all("cookie")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// Constant-time equality (length is not secret).
pub fn ct_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fills `buf` from the OS random source.
pub fn fill_random(buf: &mut [u8]) -> anyhow::Result<()> {
    use anyhow::Context as _;
    std::fs::File::open("/dev/urandom")
        .and_then(|mut f| f.read_exact(buf))
        .context("reading /dev/urandom")
}

/// `bytes` random bytes as lower-case hex.
pub fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    fill_random(&mut buf)?;
    Ok(hex(&buf))
}

pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}
