//! Test support, kept out of the library's surface: the parity fixtures (public with the
//! `testing` feature, for the parity tools in `examples/`) and the unit tests' helpers.

#[cfg(any(test, feature = "testing"))]
pub mod parity;

#[cfg(test)]
mod helpers;
#[cfg(test)]
pub(crate) use helpers::*;
