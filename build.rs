//! Compiles `proto/valet/v1/*.proto` with protox (pure Rust, so a fresh machine needs no protoc).

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/valet/v1/valet.proto"];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    // Server reflection serves this descriptor set.
    std::fs::write(
        out.join("valet_descriptor.bin"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Messages that carry a secret get a hand-written, redacting Debug in src/pb.rs.
    tonic_prost_build::configure()
        .skip_debug([
            ".valet.v1.Provider",
            ".valet.v1.Token",
            ".valet.v1.Reference",
            ".valet.v1.ResolveRequest",
            ".valet.v1.RevokeRequest",
            ".valet.v1.Credential",
            ".valet.v1.PutCredentialRequest",
            ".valet.v1.AuthenticateRequest",
            ".valet.v1.CompleteAuthorizationRequest",
            ".valet.v1.ImportGrantRequest",
            ".valet.v1.Pending",
        ])
        .compile_fds(fds)?;
    Ok(())
}
