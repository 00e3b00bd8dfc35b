//! The plugin error type: the contract's error variant with constructors and conversions.

use crate::bindings::host::runner::plugin::types as wit;

pub use wit::Error;

pub type Result<T, E = Error> = core::result::Result<T, E>;

impl Error {
    /// A configuration error about one field (dotted path in the stage's table).
    pub fn config_field(field: impl Into<String>, message: impl ToString) -> Self {
        Error::Config(wit::ConfigError {
            field: Some(field.into()),
            message: message.to_string(),
        })
    }

    /// A configuration error not tied to one field.
    pub fn config(message: impl ToString) -> Self {
        Error::Config(wit::ConfigError {
            field: None,
            message: message.to_string(),
        })
    }

    /// A remote failure that may succeed when tried again (timeouts, 5xx, throttling).
    pub fn retryable(message: impl ToString) -> Self {
        Error::Remote(wit::RemoteError {
            message: message.to_string(),
            retryable: true,
        })
    }

    /// A remote failure that will fail again (4xx, protocol errors).
    pub fn permanent(message: impl ToString) -> Self {
        Error::Remote(wit::RemoteError {
            message: message.to_string(),
            retryable: false,
        })
    }

    pub fn corrupt(message: impl ToString) -> Self {
        Error::Corrupt(message.to_string())
    }

    pub fn internal(message: impl ToString) -> Self {
        Error::Internal(message.to_string())
    }

    pub fn invalid_input(message: impl ToString) -> Self {
        Error::InvalidInput(message.to_string())
    }

    pub fn not_found(message: impl ToString) -> Self {
        Error::NotFound(message.to_string())
    }

    pub fn unsupported(message: impl ToString) -> Self {
        Error::Unsupported(message.to_string())
    }

    /// Whether the host may retry the operation.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Remote(wit::RemoteError {
                retryable: true,
                ..
            })
        )
    }
}

impl From<std::io::Error> for Error {
    fn from(e: std::io::Error) -> Self {
        use std::io::ErrorKind::*;
        match e.kind() {
            NotFound => Error::NotFound(e.to_string()),
            PermissionDenied => Error::AccessDenied(e.to_string()),
            AlreadyExists => Error::AlreadyExists(e.to_string()),
            TimedOut | ConnectionReset | ConnectionAborted | Interrupted | WouldBlock => {
                Error::retryable(e)
            }
            ConnectionRefused | NotConnected | BrokenPipe | AddrNotAvailable => Error::retryable(e),
            InvalidData | UnexpectedEof => Error::Corrupt(e.to_string()),
            _ => Error::Internal(e.to_string()),
        }
    }
}
