//! No code is generated here. The build script exists so that cargo downloads
//! `protoc-bin-vendored` before it builds anything: `tools/protoc` (see `.cargo/config.toml`)
//! hands that protoc to etcd-client's build when the system has none.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    // Referenced so the build-dependency is part of the build graph.
    let _ = protoc_bin_vendored::protoc_bin_path;
}
