//! What the end-to-end tests share: the real binary and the simulators as processes
//! ([`netfold`]) and a TCP fault proxy ([`proxy`]).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod netfold;
pub mod proxy;
