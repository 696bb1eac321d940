//! Wire types and gRPC stubs of the etcdops agent API (`etcdops.agent.v1`).
//! Nothing but generated code lives here: conversions happen at each edge.

#![allow(clippy::all, clippy::pedantic, missing_docs)]

/// `etcdops.agent.v1`
pub mod v1 {
    tonic::include_proto!("etcdops.agent.v1");
}
