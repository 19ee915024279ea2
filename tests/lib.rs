//! Support code for the end-to-end tests in `e2e/`: a generator of realistic LLM-app traces
//! (`corpus`), harnesses for the real binaries and servers the tests drive (`harness`), and
//! OTLP clients (`client`).

pub mod client;
pub mod corpus;
pub mod harness;
pub mod planted;
pub mod samples;
