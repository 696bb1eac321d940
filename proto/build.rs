//! Generates the agent API into OUT_DIR with a pure-Rust protobuf parser
//! (protox), so our own protos need no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/etcdops/agent/v1/agent.proto";
    println!("cargo:rerun-if-changed={proto}");
    let fds = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        // Snapshot chunks as `bytes::Bytes`: shared, not copied, between the
        // gRPC stream and the agent's hasher.
        .bytes(".etcdops.agent.v1.SnapshotChunk.data")
        .compile_fds(fds)?;
    Ok(())
}
