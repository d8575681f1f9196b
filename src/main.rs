//! The `postdesk` binary: parses the command line and hands over to [`postdesk::cli`].
#![forbid(unsafe_code)]

/// jemalloc: it gives memory a large read freed back to the system within
/// seconds, where glibc kept it in its arenas.
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn main() {
    std::process::exit(postdesk::cli::main());
}
