//! Cross-crate end-to-end tests (relay-e2e). [`lambda`] runs the three Lambda handlers over real AWS APIs
//! (moto_server) and the in-process ServiceNow simulator, invoked with the events Lambda would send;
//! [`runtime`] is a stub Lambda runtime API to run the real binaries against; [`campaign`] judges a fault
//! campaign (every accepted alert in exactly one record, or dead-lettered with a notice).

pub mod campaign;
pub mod lambda;
pub mod runtime;
