fn main() {
    eprintln!("error: mcp-proxy is not built yet");
    std::process::exit(1);
}
