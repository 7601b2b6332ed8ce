//! Compiles the schemas with protox (pure Rust, no system `protoc`) so the generated code builds the
//! same for the host and for wasm32-wasip1.

use std::{env, error::Error, path::PathBuf};

fn main() -> Result<(), Box<dyn Error>> {
    let out = PathBuf::from(env::var("OUT_DIR")?);
    println!("cargo:rerun-if-changed=sluice");

    // The policy: prost messages plus proto3-JSON serde impls (pbjson), which reject unknown fields.
    let policy = protox::compile(["sluice/v1/policy.proto"], ["."])?;
    let policy_bytes = prost::Message::encode_to_vec(&policy);
    prost_build::Config::new()
        .out_dir(&out)
        .compile_fds(policy)?;
    pbjson_build::Builder::new()
        .out_dir(&out)
        .register_descriptors(&policy_bytes)?
        .build(&[".sluice.v1"])?;

    // The admin API: only compiled with the `admin` feature, so the filter stays free of tonic.
    if env::var_os("CARGO_FEATURE_ADMIN").is_some() {
        let admin = protox::compile(["sluice/v1/admin.proto"], ["."])?;
        tonic_prost_build::configure()
            .out_dir(&out)
            .compile_fds(admin)?;
    }
    Ok(())
}
