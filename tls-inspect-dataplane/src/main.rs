//! `tls-inspect`: the appliance's one binary, a thin layer over the library (`cli`).

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    tls_inspect_dataplane::cli::main()
}
