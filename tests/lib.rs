//! Support code for the end-to-end tests in `e2e/`: a generator of realistic LLM-app traces
//! (`corpus`) and harnesses for the real binaries and servers the tests drive.

pub mod corpus;
