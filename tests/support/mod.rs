//! Shared helpers for the integration tests: real HTTP servers on loopback.
#![allow(dead_code, unreachable_pub)]

pub mod backend;
pub mod cookie;
pub mod http;
pub mod programs;
pub mod redis_server;
pub mod session_app;
