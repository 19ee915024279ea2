//! Support code for the end-to-end tests in `e2e/`: a generator of realistic LLM-app traces
//! (`corpus`), harnesses for the real binaries and servers the tests drive (`harness`),
//! OTLP clients (`client`), and a fake LLM judge server for the eval-runner tests and
//! benchmarks (`judge`, also the `judge-server` binary).

pub mod client;
pub mod corpus;
pub mod harness;
pub mod judge;
pub mod planted;
pub mod samples;
