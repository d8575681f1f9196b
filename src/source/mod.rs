//! Mail sources.
