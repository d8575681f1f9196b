//! The `postdesk` binary: parses the command line and hands over to [`postdesk::cli`].
#![forbid(unsafe_code)]

fn main() {
    std::process::exit(postdesk::cli::main());
}
