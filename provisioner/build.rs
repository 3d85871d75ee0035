//! Compiles the Talos API subset in `proto/` with protox (pure Rust, no `protoc`),
//! generating the client, and the server only with the `testing` feature (it backs the
//! fake apid in `src/testing`, never the appliance). The descriptor set is also written out so the conformance test can compare
//! what we declare with Talos' own descriptors.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = ["proto/machine/machine.proto", "proto/common/common.proto"];
    for f in files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = std::path::PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(
        out.join("talos_subset.descriptors"),
        prost::Message::encode_to_vec(&fds),
    )?;
    // Cargo sets CARGO_FEATURE_<NAME> for build scripts of a package built with that feature.
    let fake_apid = std::env::var_os("CARGO_FEATURE_TESTING").is_some();
    tonic_prost_build::configure()
        .build_server(fake_apid)
        .build_client(true)
        .compile_fds(fds)?;
    Ok(())
}
