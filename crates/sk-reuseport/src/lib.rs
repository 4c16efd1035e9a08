//! Being written.
#![deny(missing_docs)]
