//! Parsing; written next.
