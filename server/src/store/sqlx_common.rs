//! What every sqlx-based backend shares: turning `sqlx::Error` into the backend-neutral [`StoreError`] (the
//! message is kept for logs; the type stays below the interface).

use super::StoreError;

impl From<sqlx::Error> for StoreError {
    fn from(err: sqlx::Error) -> Self {
        StoreError::Backend(err.to_string())
    }
}

/// Turns a unique-constraint violation into [`StoreError::Conflict`].
pub(crate) fn on_unique(err: sqlx::Error, what: &str) -> StoreError {
    match &err {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict(what.to_string()),
        _ => err.into(),
    }
}
