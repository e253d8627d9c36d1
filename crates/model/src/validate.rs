//! Validation; written next.
