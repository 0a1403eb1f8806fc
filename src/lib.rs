//! # tower-sticky
//!
//! Session affinity ("sticky sessions") for Tower, axum and hyper services.
#![deny(missing_docs)]
#![forbid(unsafe_code)]
#![warn(missing_debug_implementations, rust_2018_idioms, unreachable_pub)]
