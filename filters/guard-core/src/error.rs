//! The one error type of the core crate: a kind plus a lower-case message that names the
//! offending value or JSON location. Scanning never fails because of input bytes; parsing a body,
//! a stream or a config can.

use std::fmt;

/// What went wrong, for callers that map errors to a failure policy or a reason code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// The body is not JSON, not UTF-8, or not the shape the API expects.
    Unparsable,
    /// A configured size bound was exceeded (body, SSE line, hold-back buffer).
    TooLarge,
    /// A configuration value is invalid.
    Config,
    /// A rewrite targeted a location that does not hold text.
    BadLocation,
    /// A call-out the filter depends on failed (timeout, connection error, an answer it
    /// cannot use).
    CallOut,
}

impl ErrorKind {
    /// Stable reason code used in local replies, audit records and metrics.
    pub fn reason_code(self) -> &'static str {
        match self {
            ErrorKind::Unparsable => "unparsable_body",
            ErrorKind::TooLarge => "body_too_large",
            ErrorKind::Config => "bad_config",
            ErrorKind::BadLocation => "bad_location",
            ErrorKind::CallOut => "callout_failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    kind: ErrorKind,
    message: String,
}

impl Error {
    pub fn new(kind: ErrorKind, message: impl Into<String>) -> Self {
        Error {
            kind,
            message: message.into(),
        }
    }
    pub fn unparsable(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Unparsable, message)
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::TooLarge, message)
    }
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(ErrorKind::Config, message)
    }
    pub fn kind(&self) -> ErrorKind {
        self.kind
    }
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

pub type Result<T, E = Error> = std::result::Result<T, E>;
