//! Bench-only helpers (the HTTP bench programs, load and soak): command-line options. What the
//! benches share with the tests (HTTP client, `tierhost serve` processes, free ports, plugin
//! variants) is in `tests/common`, which they include.

/// The value after `--name` on the command line, parsed.
pub fn arg<T: std::str::FromStr>(name: &str) -> Option<T> {
    let args: Vec<String> = std::env::args().collect();
    args.iter()
        .position(|a| a == name)
        .and_then(|i| args.get(i + 1))
        .and_then(|v| v.parse().ok())
}

/// Whether `--name` is on the command line.
pub fn flag(name: &str) -> bool {
    std::env::args().any(|a| a == name)
}
