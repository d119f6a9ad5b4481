//! Placeholder for the server entry point so the CLI compiles; the integrator replaces it.

/// Runs the server with `config` until it shuts down. Placeholder: returns at once.
pub fn run(_config: crate::config::Config) -> std::io::Result<()> {
    Ok(())
}
