//! Generates the `ballast.v1` Rust types and gRPC stubs from `ballast/v1/*.proto` with the
//! vendored protoc, and the file descriptor set that reflection serves.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    // The vendored protoc keeps the build free of a system protoc.
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);

    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    let files = [
        "ballast/v1/common.proto",
        "ballast/v1/raft.proto",
        "ballast/v1/cluster.proto",
        "ballast/v1/kv.proto",
        "ballast/v1/watch.proto",
        "ballast/v1/state.proto",
        "ballast/v1/agent.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    tonic_prost_build::configure()
        .file_descriptor_set_path(out.join("ballast_v1_descriptor.bin"))
        .btree_map(".")
        // Nothing is stored as these types (node/src/model/ is); the derives let
        // model/wire.rs's tests check that the stored types encode as these once did.
        .type_attribute(".", "#[derive(serde::Serialize, serde::Deserialize)]")
        // Byte strings encode as one block rather than byte by byte (bincode writes the same
        // bytes either way, so stored data is unchanged).
        .field_attribute(
            ".ballast.v1.KeyValue.key",
            "#[serde(with = \"serde_bytes\")]",
        )
        .field_attribute(
            ".ballast.v1.KeyValue.value",
            "#[serde(with = \"serde_bytes\")]",
        )
        .compile_protos(&files, &["."])?;
    Ok(())
}
