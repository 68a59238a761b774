//! The `ballast.v1` gRPC contract, generated from `proto/ballast/v1/*.proto`.
//!
//! Generated code is never edited; helpers for generated types live in `*_ext.rs` files.

pub mod v1 {
    #![allow(clippy::all, clippy::pedantic)]
    tonic::include_proto!("ballast.v1");

    /// Encoded descriptors of every file of the package, for gRPC server reflection.
    pub const FILE_DESCRIPTOR_SET: &[u8] =
        tonic::include_file_descriptor_set!("ballast_v1_descriptor");
}

mod ext;

pub use ext::*;
