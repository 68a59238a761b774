//! A minimal announce-only BGP speaker, for Ballast's agent. So far: the codec ([`wire`]).

pub mod wire;

pub use wire::Family;
