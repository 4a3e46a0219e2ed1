//! Writes src/profile/proto.rs from proto/profile.proto, and src/pyroscope/proto.rs from
//! Pyroscope's push API (proto/pyroscope/push/v1/push.proto and the types it uses).
use std::path::Path;

fn main() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    profile(&root);
    pyroscope(&root);
}

fn profile(root: &Path) {
    let out = tempdir("profile");
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

/// prost writes one file per package (`push.v1.rs`, `types.v1.rs`) that refer to each other
/// as `super::super::types::v1`; they are nested here in one file the same way.
fn pyroscope(root: &Path) {
    let out = tempdir("pyroscope");
    let protos = root.join("proto/pyroscope");
    prost_build::Config::new()
        .out_dir(&out)
        .compile_protos(&[protos.join("push/v1/push.proto")], &[protos])
        .expect("protoc failed");
    let mut text = String::from(
        "// @generated from proto/pyroscope/{push,types}/v1/*.proto by proto/gen; do not edit.\n\
         #![allow(clippy::all, missing_docs)]\n",
    );
    for (package, version) in [("push", "v1"), ("types", "v1")] {
        let generated = std::fs::read_to_string(out.join(format!("{package}.{version}.rs"))).unwrap();
        let indented: String = generated
            .lines()
            .map(|line| if line.is_empty() { "\n".to_string() } else { format!("        {line}\n") })
            .collect();
        text.push_str(&format!("\npub mod {package} {{\n    pub mod {version} {{\n{indented}    }}\n}}\n"));
    }
    let path = root.join("src/pyroscope/proto.rs");
    std::fs::write(&path, text).unwrap();
    // Nesting changes the widths prost's formatting chose; rustfmt (with the crate's
    // rustfmt.toml) makes the file what `cargo fmt` would.
    let formatted = std::process::Command::new("rustfmt").args(["--edition", "2024"]).arg(&path).status();
    assert!(formatted.is_ok_and(|status| status.success()), "rustfmt failed");
    std::fs::remove_dir_all(out).ok();
}

fn tempdir(what: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("alertprof-proto-gen-{what}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
