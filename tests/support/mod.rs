//! What the end-to-end tests share: the real binary and the simulators as processes
//! ([`netfold`]), a TCP fault proxy ([`proxy`]) and a private Open vSwitch ([`ovs`]).
#![allow(dead_code)] // each test binary uses a different part of the harness

pub mod netfold;
pub mod ovs;
pub mod proxy;
