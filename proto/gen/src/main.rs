//! Writes src/profile/proto.rs from proto/profile.proto.
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let out = tempdir();
    prost_build::Config::new()
        .out_dir(&out)
        .compile_protos(&[root.join("proto/profile.proto")], &[root.join("proto")])
        .expect("protoc failed");
    let generated = std::fs::read_to_string(out.join("perftools.profiles.rs")).unwrap();
    let header = "// @generated from proto/profile.proto by proto/gen; do not edit.\n\
                  #![allow(clippy::all, missing_docs)]\n\n";
    std::fs::write(root.join("src/profile/proto.rs"), format!("{header}{generated}")).unwrap();
    std::fs::remove_dir_all(out).ok();
}

fn tempdir() -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("alertprof-proto-gen-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
