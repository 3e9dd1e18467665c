//! The `berry` binary: parse the command line, hand over to `berry::cli`.

// mimalloc: thread-local free lists suit thread-per-core allocation patterns, and it measured
// faster than the system allocator for the per-request buffers here.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let code = berry::cli::main();
    berry::logging::flush();
    std::process::exit(code);
}
