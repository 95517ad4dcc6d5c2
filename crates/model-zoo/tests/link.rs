//! The binaries link libtorch and run without LD_LIBRARY_PATH (build.rs rpaths).

#[test]
fn libtorch_runs_and_cuda_query_is_callable() {
    // Calls into libtorch_cpu; whether CUDA is there depends on the machine,
    // but the query itself must work (it needs the CUDA hooks to load or be absent cleanly).
    let cuda = tch::Cuda::is_available();
    let devices = tch::Cuda::device_count();
    assert_eq!(cuda, devices > 0, "is_available={cuda} but device_count={devices}");
    let x = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    assert_eq!((&x * 2).sum(tch::Kind::Float).double_value(&[]), 12.0);
}

#[test]
fn ld_library_path_is_not_needed() {
    // The test binary itself is the proof that the rpaths work when this variable is unset.
    if std::env::var_os("LD_LIBRARY_PATH").is_some_and(|v| !v.is_empty()) {
        eprintln!("skipping: LD_LIBRARY_PATH is set, so this run cannot show the rpaths suffice");
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = std::process::Command::new("ldd").arg(&exe).output();
    let Ok(out) = out else {
        eprintln!("skipping: ldd not available");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("not found"), "unresolved libraries:\n{text}");
    assert!(text.contains("libtorch_cpu.so"), "libtorch_cpu.so not linked:\n{text}");
}
