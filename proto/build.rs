//! Compiles every `.proto` under `backroom/` with protox (pure Rust, no system
//! `protoc`), writes the encoded file descriptor set for server reflection and
//! generates tonic clients and servers from the same descriptors.

use std::{env, fs, path::PathBuf};

fn proto_files(dir: &std::path::Path, out: &mut Vec<PathBuf>) -> std::io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            proto_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "proto") {
            out.push(path);
        }
    }
    Ok(())
}

/// Every message implements `prost::Name` (type URLs
/// `type.googleapis.com/<full name>`): events pack their payloads as
/// `google.protobuf.Any`.
fn type_names() -> prost_build::Config {
    let mut config = prost_build::Config::new();
    config.enable_type_names();
    config.type_name_domain(["."], "type.googleapis.com");
    config
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    let mut files = Vec::new();
    proto_files(&root.join("backroom"), &mut files)?;
    // Sorted so the generated code and the descriptor set are reproducible.
    files.sort();
    println!("cargo:rerun-if-changed=backroom");
    println!("cargo:rerun-if-changed=google");

    let mut compiler = protox::Compiler::new([&root])?;
    compiler
        .include_imports(true)
        .include_source_info(true)
        .open_files(&files)?;
    let fds = compiler.file_descriptor_set();

    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    // `file_descriptor_set_path()` is ignored on the `compile_fds` path, so the
    // set reflection serves is written here by hand — encoded by protox
    // itself: `prost_types` drops custom options (`google.api.http`, the
    // REST routes the gateway serves) when it re-encodes.
    fs::write(
        out_dir.join("backroom_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .codec_path("crate::codec::ProtoCodec")
        // Every proto map is a BTreeMap: its wire encoding is then in key
        // order, so the same request always encodes (and fingerprints for
        // idempotency) the same; a HashMap's order changes per instance, and
        // a replay with two metadata entries could be refused as
        // REQUEST_ID_REUSED.
        .btree_map(".")
        .compile_fds_with_config(fds, type_names())?;
    Ok(())
}
