//! The binaries link libtorch and run without LD_LIBRARY_PATH (build.rs rpaths).

#[test]
fn libtorch_runs_and_cuda_query_is_callable() {
    // Calls into libtorch_cpu; whether CUDA is there depends on the machine,
    // but the query itself must work (it needs the CUDA hooks to load or be absent cleanly).
    let cuda = tch::Cuda::is_available();
    let devices = tch::Cuda::device_count();
    assert_eq!(
        cuda,
        devices > 0,
        "is_available={cuda} but device_count={devices}"
    );
    let x = tch::Tensor::from_slice(&[1.0f32, 2.0, 3.0]);
    assert_eq!((&x * 2).sum(tch::Kind::Float).double_value(&[]), 12.0);
}

#[test]
fn binaries_find_libtorch_through_their_rpaths() {
    // cargo runs tests with LD_LIBRARY_PATH pointing at libtorch, so ask the
    // dynamic loader about this very binary without it.
    let exe = std::env::current_exe().unwrap();
    let Ok(out) = std::process::Command::new("ldd")
        .arg(&exe)
        .env_remove("LD_LIBRARY_PATH")
        .output()
    else {
        eprintln!("skipping: ldd not available");
        return;
    };
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        !text.contains("not found"),
        "unresolved libraries without LD_LIBRARY_PATH:\n{text}"
    );
    assert!(
        text.contains("libtorch_cpu.so"),
        "libtorch_cpu.so not linked:\n{text}"
    );
    // The CUDA backend is linked exactly when the build asked for it.
    let cuda_build = option_env!("LESSON8_TORCH_DEVICE") == Some("cuda");
    assert_eq!(
        text.contains("libtorch_cuda.so"),
        cuda_build,
        "LESSON8_TORCH_DEVICE={:?}:\n{text}",
        option_env!("LESSON8_TORCH_DEVICE")
    );
}
