//! Runs one input through one target in this process, without the limits or the
//! watchdog, and prints what each reader said and how long the input took:
//! `cargo run -p fuzz --release --example replay -- jpeg target/fuzz-failures/jpeg/hang-....bin`

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [target, file] = args.as_slice() else {
        eprintln!("usage: replay <target> <input file>");
        std::process::exit(2);
    };
    let target = fuzz::find_target(target).unwrap_or_else(|| {
        let names: Vec<&str> = fuzz::TARGETS.iter().map(|t| t.name).collect();
        eprintln!("no target {target}; targets: {}", names.join(", "));
        std::process::exit(2);
    });
    let input = std::fs::read(file).expect("the input file");
    let dir = tempfile::tempdir().expect("a temp folder");
    let mut scratch = fuzz::Scratch::new(dir.path().to_path_buf()).expect("scratch");
    let started = std::time::Instant::now();
    let outcome = (target.run)(&mut scratch, &input);
    println!(
        "{} ({} bytes) took {:.3} s",
        target.name,
        input.len(),
        started.elapsed().as_secs_f64()
    );
    match outcome {
        Ok(tags) => tags.iter().for_each(|t| println!("  {t}")),
        Err(violation) => {
            println!("  VIOLATION: {violation}");
            std::process::exit(1);
        }
    }
}
