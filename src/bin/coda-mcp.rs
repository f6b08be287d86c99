fn main() {
    eprintln!("error: coda-mcp is not built yet");
    std::process::exit(1);
}
