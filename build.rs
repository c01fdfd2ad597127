//! Link flags of the `weir` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-env-changed=WEIR_NO_RELR");
    // Packed relative relocations (DT_RELR): the dynamic loader applies the ~110,000 pointer
    // relocations of the position-independent binary from a few KiB of bitmaps instead of a
    // 2.6 MiB `.rela.dyn` it reads (and keeps resident) at start. Needs GNU ld >= 2.38 or lld
    // to link and glibc >= 2.36 to run; `WEIR_NO_RELR=1` builds without it for older hosts.
    let linux_gnu = std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux")
        && std::env::var("CARGO_CFG_TARGET_ENV").as_deref() == Ok("gnu");
    if linux_gnu && std::env::var_os("WEIR_NO_RELR").is_none() {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
