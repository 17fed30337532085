// SPDX-License-Identifier: MIT OR Apache-2.0
//! Links the hostile guest with `link.ld` when building for the bare-metal target.

fn main() {
    let target = std::env::var("TARGET").unwrap_or_default();
    if target.starts_with("aarch64-unknown-none") {
        let dir = std::env::var("CARGO_MANIFEST_DIR").expect("cargo sets CARGO_MANIFEST_DIR");
        println!("cargo:rustc-link-arg=-T{dir}/link.ld");
        println!("cargo:rerun-if-changed=link.ld");
    }
}
