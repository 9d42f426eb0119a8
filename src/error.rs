//! One error type for the whole crate.
//!
//! Every variant carries a message that says what was wrong and what to do about it; callers (the CLI, the web
//! page) show it as it is. Constructor helpers keep call sites short, in the manner of symphonia's `errors.rs`.

use std::fmt;

/// Everything that can go wrong in sonomaly.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The audio could not be decoded or is unusable (empty, corrupt, non-finite samples, unsupported format).
    #[error("audio: {0}")]
    Audio(String),
    /// A configuration or argument is out of range or inconsistent.
    #[error("invalid input: {0}")]
    InvalidInput(String),
    /// The backbone (ONNX model or its spec) could not be loaded or run.
    #[error("model: {0}")]
    Model(String),
    /// A bank file is malformed, truncated, of another version, or made for another backbone or front end.
    #[error("bank: {0}")]
    Bank(String),
    /// Reading or writing a file failed.
    // The OS error is part of the message and deliberately not a `source`, so that reports that print the error
    // chain (anyhow's `{:#}`) do not repeat it.
    #[error("{context}: {cause}")]
    Io {
        /// What was being done, e.g. "reading bank.safetensors".
        context: String,
        /// The operating system's error.
        cause: std::io::Error,
    },
    /// The operation was cancelled by the caller.
    #[error("cancelled")]
    Cancelled,
}

/// `Result` with [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// An [`Error::Audio`] from anything printable.
    pub fn audio(msg: impl fmt::Display) -> Self {
        Error::Audio(msg.to_string())
    }
    /// An [`Error::InvalidInput`] from anything printable.
    pub fn invalid(msg: impl fmt::Display) -> Self {
        Error::InvalidInput(msg.to_string())
    }
    /// An [`Error::Model`] from anything printable.
    pub fn model(msg: impl fmt::Display) -> Self {
        Error::Model(msg.to_string())
    }
    /// An [`Error::Bank`] from anything printable.
    pub fn bank(msg: impl fmt::Display) -> Self {
        Error::Bank(msg.to_string())
    }
    /// An [`Error::Io`] with the action that failed.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io { context: context.to_string(), cause: source }
    }
}
