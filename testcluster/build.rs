//! Compiles the clock shim (csrc/clockshim.c) that `faketime(true)` preloads into
//! redis-server. A C compiler is already needed to link Rust on Linux, so `cc` is assumed;
//! without one the crate still builds and `faketime(true)` reports itself unsupported.

use std::env;
use std::path::PathBuf;
use std::process::Command;

fn main() {
    println!("cargo::rerun-if-changed=csrc/clockshim.c");
    println!("cargo::rerun-if-env-changed=CC");
    println!("cargo::rustc-check-cfg=cfg(tc_no_clock_shim)");
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let so = out.join("libtcclock.so");
    let cc = env::var("CC").unwrap_or_else(|_| "cc".into());
    let ok = Command::new(&cc)
        .args(["-shared", "-fPIC", "-O2", "-Wall", "-o"])
        .arg(&so)
        .arg("csrc/clockshim.c")
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        println!(
            "cargo::warning=could not compile csrc/clockshim.c with {cc}: faketime(true) will be unsupported"
        );
        println!("cargo::rustc-cfg=tc_no_clock_shim");
        std::fs::write(&so, b"").expect("writing placeholder shim");
    }
}
