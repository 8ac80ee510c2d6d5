//! The edges: gRPC services for agents and operators, and the HTTP listener for the OAuth
//! callback and health. Thin: map wire ⇄ domain, call a service, map the error once.

pub mod grpc;
pub mod http;
