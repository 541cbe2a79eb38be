//! SqliteStore.
